"""A procedural 3-D scene seen from posed cameras, as a TFDS builder for novel-view synthesis
(NeRF, Mildenhall et al. 2020).

The scene (world z up, units of the floor's half-width 1.6): a checkered floor slab
(|x|, |y| <= 1.6, -0.08 <= z <= 0) carrying a red and a blue sphere and a green and a yellow
box turned about the vertical (`OBJECTS`), under one directional light with hard shadows;
everything else is white background. It is rendered by the numpy ray caster below: the
nearest hit of each pixel's ray (analytic sphere and slab intersections), Lambertian shading
albedo * (0.3 + 0.7 max(0, n . l)) with the direct part zero where a shadow ray to the light
hits something, one ray through the centre of each pixel (no anti-aliasing), 8-bit colour.

Cameras sit on a sphere of radius 4 about the origin and look at it (Blender's convention,
as NeRF's synthetic scenes: the camera looks down its -z axis, x right, y up; `look_at`),
pinhole intrinsics H = W = 32 and focal 40 pixels (a 43.6 degree field of view). The train
split has 64 views at random azimuths and elevations 15-65 degrees (seed 1), the test split
8 other views (seed 2): novel poses never seen in training.

An example is one pixel of a view: its colour `rgb` (3,) uint8, `pixel` (row, col), its
view's camera-to-world `pose` (4, 4) and `focal`, and the `view` index, so that the loop's
batches are random rays across all train views (as NeRF batches rays); a model turns
(pose, pixel, focal) into the ray, and groups test pixels by `view` for per-view metrics
(TFDS stores a split in an order of its own). 65,536 train and 8,192 test examples. The
mean colour of the train pixels is `TRAIN_MEAN_RGB`: the constant predictor a NeRF is
compared with.
"""

import math

import numpy as np

from train.datasets.procedural import Procedural

HEIGHT = WIDTH = 32
FOCAL = 40.0
RADIUS = 4.0           # cameras' distance to the origin
NEAR, FAR = 2.0, 6.0   # every surface lies between these distances from any camera
TRAIN_VIEWS, TEST_VIEWS = 64, 8
SPLITS = {'train': (TRAIN_VIEWS, 1), 'test': (TEST_VIEWS, 2)}  # (views, seed)
ELEVATIONS = (15.0, 65.0)  # degrees
LIGHT = np.array([0.4, 0.3, 1.0]) / np.linalg.norm([0.4, 0.3, 1.0])  # towards the light
AMBIENT = 0.3
BACKGROUND = np.ones(3)
# (kind, centre, size, albedo, turn about z in degrees); size: a sphere's radius, a box's
# half-extents. The floor is a box whose albedo is a checkerboard of squares of side 0.8.
FLOOR = ('box', (0.0, 0.0, -0.04), (1.6, 1.6, 0.04), None, 0.0)
OBJECTS = (
    ('sphere', (0.55, -0.35, 0.45), 0.45, (0.85, 0.15, 0.12), 0.0),
    ('sphere', (-0.6, 0.65, 0.3), 0.3, (0.15, 0.3, 0.9), 0.0),
    ('box', (-0.55, -0.6, 0.35), (0.3, 0.25, 0.35), (0.15, 0.75, 0.2), 20.0),
    ('box', (0.65, 0.75, 0.22), (0.25, 0.2, 0.22), (0.95, 0.8, 0.1), -35.0),
)
TRAIN_MEAN_RGB = (0.6583, 0.6472, 0.6239)  # of the train split's pixels, in [0, 1]


def look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
  """The camera-to-world matrix (4, 4) of a camera at `position` looking at `target`:
  columns right, up, back (the camera looks along -back) and the position."""
  position = np.asarray(position, np.float64)
  back = position - np.asarray(target, np.float64)
  back /= np.linalg.norm(back)
  right = np.cross(up, back)
  right /= np.linalg.norm(right)
  pose = np.eye(4)
  pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, position
  return pose


def orbit_pose(azimuth: float, elevation: float, radius: float = RADIUS) -> np.ndarray:
  """`look_at` the origin from azimuth / elevation (radians) at `radius`."""
  ce = math.cos(elevation)
  return look_at(radius * np.array([ce * math.cos(azimuth), ce * math.sin(azimuth),
                                    math.sin(elevation)]))


def camera_rays(pose, height: int = HEIGHT, width: int = WIDTH, focal: float = FOCAL):
  """(origins, unit directions), each (height * width, 3), of the rays through the pixel
  centres of a pinhole camera, row-major: pixel (i, j) looks along
  pose[:3, :3] @ ((j + 0.5 - width / 2) / focal, -(i + 0.5 - height / 2) / focal, -1)."""
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  d = np.stack([(j + 0.5 - width / 2) / focal, -(i + 0.5 - height / 2) / focal,
                -np.ones(i.shape)], -1).reshape(-1, 3)
  d = d @ np.asarray(pose)[:3, :3].T
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  return np.broadcast_to(np.asarray(pose)[:3, 3], d.shape).copy(), d


def _turn(v, degrees):
  """Rotates vectors (N, 3) about z by `degrees`."""
  a = math.radians(degrees)
  c, s = math.cos(a), math.sin(a)
  return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)


def _hit_sphere(o, d, centre, radius):
  """(distance (N,), inf where missed; outward normals (N, 3)) of unit-direction rays."""
  oc = o - np.asarray(centre)
  b = (oc * d).sum(1)
  disc = b * b - (oc * oc).sum(1) + radius * radius
  root = np.sqrt(np.maximum(disc, 0.0))
  t = np.where(-b - root > 1e-6, -b - root, -b + root)
  t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
  n = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - np.asarray(centre)
  return t, n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _hit_box(o, d, centre, half, turn):
  """The same for a box of half-extents `half` turned about z by `turn` degrees (slabs)."""
  lo = _turn(o - np.asarray(centre), -turn)
  ld = _turn(d, -turn)
  with np.errstate(divide='ignore', invalid='ignore'):
    inv = 1.0 / np.where(ld == 0, 1e-30, ld)
    t1, t2 = (-np.asarray(half) - lo) * inv, (np.asarray(half) - lo) * inv
  t_in, t_out = np.minimum(t1, t2), np.maximum(t1, t2)
  near, far = t_in.max(1), t_out.min(1)
  hit = (near <= far) & (far > 1e-6)
  t = np.where(hit, np.where(near > 1e-6, near, far), np.inf)
  axis = t_in.argmax(1)
  n = np.zeros_like(lo)
  n[np.arange(len(n)), axis] = -np.sign(ld[np.arange(len(n)), axis])
  return t, _turn(n, turn)


def _checker(points):
  cells = np.floor(points[:, 0] / 0.8) + np.floor(points[:, 1] / 0.8)
  light = (cells % 2 == 0)[:, None]
  return np.where(light, [0.85, 0.85, 0.8], [0.45, 0.45, 0.5])


def _nearest(o, d):
  """(distance, normal, object index (-1: the floor)) of the nearest hit of each ray."""
  best_t = np.full(len(o), np.inf)
  normal, which = np.zeros_like(o), np.full(len(o), -2)
  for k, (kind, centre, size, _, turn) in enumerate((FLOOR, *OBJECTS)):
    t, n = (_hit_sphere(o, d, centre, size) if kind == 'sphere'
            else _hit_box(o, d, centre, size, turn))
    closer = t < best_t
    best_t = np.where(closer, t, best_t)
    normal[closer], which[closer] = n[closer], k - 1
  return best_t, normal, which


def shade(o, d) -> np.ndarray:
  """The colour (N, 3) in [0, 1] seen along rays (origins, unit directions)."""
  t, n, which = _nearest(o, d)
  hit = np.isfinite(t)
  p = o + np.where(hit, t, 0.0)[:, None] * d
  albedo = _checker(p)
  for k, obj in enumerate(OBJECTS):
    albedo[which == k] = obj[3]
  shadow_t, _, _ = _nearest(p + 1e-4 * n, np.broadcast_to(LIGHT, p.shape))
  direct = np.maximum((n * LIGHT).sum(1), 0.0) * ~np.isfinite(shadow_t)
  colour = albedo * (AMBIENT + (1 - AMBIENT) * direct)[:, None]
  return np.where(hit[:, None], colour, BACKGROUND)


def render(pose, height: int = HEIGHT, width: int = WIDTH, focal: float = FOCAL):
  """The uint8 image (height, width, 3) a camera at `pose` sees."""
  colour = shade(*camera_rays(pose, height, width, focal))
  return np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8).reshape(height, width, 3)


def poses(split: str) -> np.ndarray:
  """The camera-to-world matrices (views, 4, 4) float32 of a split's views."""
  count, seed = SPLITS[split]
  rng = np.random.default_rng(seed)
  azimuth = rng.uniform(0, 2 * math.pi, count)
  elevation = np.radians(rng.uniform(*ELEVATIONS, count))
  return np.stack([orbit_pose(a, e) for a, e in zip(azimuth, elevation)]).astype(np.float32)


def views(split: str):
  """(images (views, H, W, 3) uint8, poses (views, 4, 4) float32) of a split."""
  p = poses(split)
  return np.stack([render(pose.astype(np.float64)) for pose in p]), p


class Scene(Procedural):
  """Pixels of posed views of a procedural scene of coloured primitives (one ray each)."""
  FEATURES = {'rgb': ((3,), np.uint8), 'pixel': ((2,), np.int32), 'pose': ((4, 4), np.float32),
              'focal': ((), np.float32), 'view': ((), np.int32)}
  SPLITS = {name: (name,) for name in SPLITS}

  def generate(self, split):
    images, p = views(split)
    rows, cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing='ij')
    pixel = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.int32)
    for v, (image, pose) in enumerate(zip(images, p)):
      colours = image.reshape(-1, 3)
      for k in range(HEIGHT * WIDTH):
        yield {'rgb': colours[k], 'pixel': pixel[k], 'pose': pose,
               'focal': np.float32(FOCAL), 'view': np.int32(v)}
