"""NeRF: neural radiance fields (Mildenhall, Srinivasan, Tancik, Barron, Ramamoorthi & Ng
2020, "NeRF: Representing scenes as neural radiance fields for view synthesis"), the model
and its objective: novel views of one scene learnt from posed photographs of it.

A scene is a field F(x, d) -> (sigma, c): a volume density sigma >= 0 at the point x and the
colour c emitted there towards the direction d. A pixel's colour is the field rendered
along its camera ray r(t) = o + t d between the bounds `near` and `far`, by quadrature over
samples t_1 < ... < t_N with spacings delta_i = t_i+1 - t_i (the last 1e10: what is left
of the ray is opaque) and alpha compositing:

  alpha_i = 1 - exp(-sigma_i delta_i),  T_i = prod_{j < i} (1 - alpha_j),
  w_i = T_i alpha_i,  C(r) = sum_i w_i c_i  (+ (1 - sum_i w_i) for a white background).

F is an MLP on positional encodings gamma(p) = (p, sin(2^k pi p), cos(2^k pi p) for
k < L) of each coordinate, L = 10 for the position (63 inputs, the raw coordinates
included as in the authors' code; positions are divided by `bound` so the objects lie in
[-1, 1]) and L = 4 for the unit view direction (27): 8 ReLU layers of 256 with gamma(x)
concatenated again to the fifth layer's output, then a linear density head (ReLU when
rendered) and a 256-wide feature that, with gamma(d), feeds one 128-wide ReLU layer and a
sigmoid RGB head, so density never depends on the view (595,844 parameters). The paper's
structure is the default; depth, width, the skip layers and the sample counts are fields.

Sampling is hierarchical with two such networks. The coarse one is evaluated at N_c
stratified samples (one uniform draw in each of N_c equal bins of [near, far]; the bin
centres at evaluation); its weights w_i (held constant: stop_gradient) make a
piecewise-constant pdf over the bins between the midpoints of its samples, from which N_f
more distances are drawn by inverse transform sampling (`sample_pdf`); the fine network is
evaluated at all N_c + N_f, sorted. The loss is the squared error of both renders (the coarse
one so that its weights are worth sampling from). Paper: N_c = 64, N_f = 128, 4,096 rays
a batch, Adam 5e-4 decaying to 5e-5.

The task (`make`): examples are pixels (`train/datasets/scene.py`: colour, pixel, the
view's camera-to-world pose and focal), turned into rays here (`pixel_rays`), so a batch
is random rays over all train views, sharded over devices like any batch. Each ray's
stratified and inverse-CDF draws come from the step's key folded with the ray's index in
the dataset, never the device's, so 1 or 8 devices, jit or pmap, train alike. Evaluation
renders whole held-out views deterministically and reports `psnr`, the mean over test views
of -10 log10(MSE) of the fine render, next to `psnr_coarse` and `psnr_baseline` (every
pixel the mean training colour). `sample` renders an orbit of novel views around the scene
in chunks of rays -> {'videos': (B, frames, H, W, 3) uint8}, a GIF through `train.sample`.

Measured (configs/nerf_scene.py, 2026-12-06, shared 2-core CPU): a 4 x 64 NeRF with
N_c = N_f = 32, 1,500 steps of 256 rays (23.7 min wall under load 6-13), reached a test-view
PSNR of 15.43 / 17.50 / 18.08 dB at steps 500 / 1000 / 1500 against 9.80 dB for the mean
training colour; blurred but view-consistent orbits. The paper's network is `:paper`
(1,191,688 parameters), not trained here.

Dimension key: R rays, P samples along a ray, C coarse samples, F fine samples, B bins,
V views, T frames.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.task import ConfigError, Task, parse_options, unconditional_rows


def positional_encoding(x, num_freqs: int):
  """gamma(x) over the last axis (3): x, then sin and cos of 2^k pi x for k < num_freqs,
  grouped by frequency: (..., 3 + 6 num_freqs)."""
  freqs = jnp.pi * 2.0 ** jnp.arange(num_freqs, dtype=x.dtype)
  angles = x[..., None, :] * freqs[:, None]  # (..., L, 3)
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)
  return jnp.concatenate([x, enc.reshape(*x.shape[:-1], 6 * num_freqs)], -1)


class RadianceField(nn.Module):
  """The NeRF MLP: (points (R, P, 3), unit directions (R, 3)) -> (raw density (R, P),
  colour (R, P, 3) in [0, 1])."""
  depth: int = 8
  width: int = 256
  skips: tuple = (4,)        # layers (0-based) whose output is concatenated with gamma(x)
  view_width: int = 128
  position_freqs: int = 10   # L for gamma(x)
  direction_freqs: int = 4   # L for gamma(d)
  bound: float = 1.0         # positions are divided by it before the encoding

  @nn.compact
  def __call__(self, x_RP3, d_R3):
    gx = positional_encoding(x_RP3 / self.bound, self.position_freqs)
    h = gx
    for i in range(self.depth):
      h = nn.relu(nn.Dense(self.width, name=f'layer{i}')(h))
      if i in self.skips:
        h = jnp.concatenate([gx, h], -1)
    sigma_RP = nn.Dense(1, name='density')(h)[..., 0]
    feature = nn.Dense(self.width, name='feature')(h)
    gd = positional_encoding(d_R3, self.direction_freqs)
    gd = jnp.broadcast_to(gd[:, None], (*feature.shape[:-1], gd.shape[-1]))
    h = nn.relu(nn.Dense(self.view_width, name='view')(jnp.concatenate([feature, gd], -1)))
    return sigma_RP, nn.sigmoid(nn.Dense(3, name='rgb')(h))


# ---------------------------------------------------------------------------- rendering


def stratified_samples(near: float, far: float, jitter_RC):
  """Distances (R, C): one in each of C equal bins of [near, far], at fraction `jitter` of
  its bin (uniform draws in [0, 1) for training; 0.5, the centres, to evaluate)."""
  c = jitter_RC.shape[-1]
  return near + (far - near) * (jnp.arange(c) + jitter_RC) / c


def composite(sigma_RP, rgb_RP3, t_RP, white_background: bool = False,
              last_delta: float = 1e10):
  """Alpha compositing along rays: (colour (R, 3), weights (R, P), opacity (R,), expected
  depth (R,)). The raw density goes through a ReLU; the last sample's spacing is
  `last_delta`."""
  delta = jnp.concatenate([jnp.diff(t_RP, axis=-1),
                           jnp.full(t_RP.shape[:-1] + (1,), last_delta, t_RP.dtype)], -1)
  keep = jnp.exp(-nn.relu(sigma_RP) * delta)  # 1 - alpha_i: what passes sample i
  transmittance = jnp.cumprod(
      jnp.concatenate([jnp.ones_like(keep[..., :1]), keep[..., :-1]], -1), -1)
  weights = transmittance * (1.0 - keep)
  acc = weights.sum(-1)
  rgb = (weights[..., None] * rgb_RP3).sum(-2)
  if white_background:
    rgb = rgb + (1.0 - acc)[..., None]
  return rgb, weights, acc, (weights * t_RP).sum(-1)


def sample_pdf(edges_RB1, weights_RB, u_RN):
  """Inverse transform sampling of the piecewise-constant pdf with bins [edges_b,
  edges_b+1] and masses proportional to `weights` (> 0), at quantiles u in [0, 1): (R, N),
  each in the bin where the cdf passes u, placed linearly inside it."""
  pdf = weights_RB / weights_RB.sum(-1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]), jnp.cumsum(pdf, -1)], -1)  # (R, B+1)
  nbins = weights_RB.shape[-1]
  # Index of the bin's upper edge: the number of cdf entries <= u (bins of zero mass are
  # passed over), in [1, B].
  above = jnp.clip((cdf[..., None, :] <= u_RN[..., None]).sum(-1), 1, nbins)
  below = above - 1
  take = lambda a, i: jnp.take_along_axis(a, i, -1)
  c0, c1 = take(cdf, below), take(cdf, above)
  e0, e1 = take(edges_RB1, below), take(edges_RB1, above)
  frac = jnp.clip((u_RN - c0) / jnp.where(c1 - c0 > 1e-12, c1 - c0, 1.0), 0.0, 1.0)
  return e0 + frac * (e1 - e0)


def fine_distances(t_RC, weights_RC, u_RF):
  """The fine pass's distances (R, C + F), sorted: the coarse ones and F drawn by
  `sample_pdf` at quantiles u from the coarse weights of the inner samples over the bins
  between the samples' midpoints (+ 1e-5, so every bin stays reachable, as in the authors'
  code). Neither the weights nor the drawn distances are differentiated (stop_gradient)."""
  mids = 0.5 * (t_RC[:, 1:] + t_RC[:, :-1])
  t_RF = sample_pdf(mids, jax.lax.stop_gradient(weights_RC[:, 1:-1]) + 1e-5, u_RF)
  return jnp.sort(jnp.concatenate([t_RC, jax.lax.stop_gradient(t_RF)], -1), -1)


class NeRF(nn.Module):
  """Coarse and fine radiance fields with hierarchical sampling: rays (origins (R, 3), unit
  directions (R, 3)) -> renders. Pass uniform draws `jitter` (R, C) and `u` (R, F) to
  train; without them the samples are deterministic (bin centres, evenly spaced
  quantiles)."""
  depth: int = 8
  width: int = 256
  skips: tuple = (4,)
  view_width: int = 128
  position_freqs: int = 10
  direction_freqs: int = 4
  bound: float = 1.0
  num_coarse: int = 64      # N_c
  num_fine: int = 128       # N_f (0: the coarse network alone)
  near: float = 2.0
  far: float = 6.0
  white_background: bool = True

  @nn.compact
  def __call__(self, origins_R3, directions_R3, jitter_RC=None, u_RF=None):
    field = functools.partial(
        RadianceField, depth=self.depth, width=self.width, skips=tuple(self.skips),
        view_width=self.view_width, position_freqs=self.position_freqs,
        direction_freqs=self.direction_freqs, bound=self.bound)
    r = origins_R3.shape[0]
    if jitter_RC is None:
      jitter_RC = jnp.full((r, self.num_coarse), 0.5, origins_R3.dtype)

    def render(name, t_RP):
      x = origins_R3[:, None] + t_RP[..., None] * directions_R3[:, None]
      sigma, rgb = field(name=name)(x, directions_R3)
      return composite(sigma, rgb, t_RP, self.white_background)

    t_RC = stratified_samples(self.near, self.far, jitter_RC)
    rgb, weights, acc, depth = render('coarse', t_RC)
    out = {'rgb_coarse': rgb, 'acc_coarse': acc, 'depth_coarse': depth}
    if self.num_fine:
      if u_RF is None:
        u_RF = jnp.broadcast_to((jnp.arange(self.num_fine) + 0.5) / self.num_fine,
                                (r, self.num_fine)).astype(origins_R3.dtype)
      rgb, weights, acc, depth = render('fine', fine_distances(t_RC, weights, u_RF))
    out.update(rgb_fine=rgb, acc_fine=acc, depth_fine=depth)
    return out


Model = NeRF  # 'scene.nerf'
TINY = dict(depth=2, width=16, skips=(0,), view_width=8, num_coarse=8, num_fine=8)


def check(model: NeRF):
  """Raises ValueError for sizes the renderer cannot use."""
  if model.num_coarse < 3 or model.num_fine < 0:
    raise ValueError(f'NeRF needs num_coarse >= 3 (the fine pass samples between their '
                     f'midpoints) and num_fine >= 0, got {model.num_coarse}, {model.num_fine}')
  if not 0 <= model.near < model.far:
    raise ValueError(f'NeRF needs 0 <= near < far, got {model.near}, {model.far}')
  if any(not 0 <= s < model.depth for s in model.skips):
    raise ValueError(f'NeRF skips {tuple(model.skips)} must be layers 0..{model.depth - 1}')


# ---------------------------------------------------------------------------- cameras


def pixel_rays(pose_R44, pixel_R2, focal_R, height: int, width: int):
  """Rays (origins (R, 3), unit directions (R, 3)) through pixel centres (row, col) of
  pinhole cameras with camera-to-world poses (Blender's axes: the camera looks down -z,
  y up, x right)."""
  i = pixel_R2[:, 0].astype(jnp.float32) + 0.5
  j = pixel_R2[:, 1].astype(jnp.float32) + 0.5
  d_cam = jnp.stack([(j - width / 2) / focal_R, -(i - height / 2) / focal_R,
                     -jnp.ones_like(i)], -1)
  d = jnp.einsum('rij,rj->ri', pose_R44[:, :3, :3], d_cam)
  return pose_R44[:, :3, 3], d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def orbit_poses(azimuth_T, elevation, radius):
  """Camera-to-world poses (T, 4, 4) looking at the origin from the sphere of `radius`, z
  up, at azimuths (T,) and one elevation (radians)."""
  ce, se = jnp.cos(elevation), jnp.sin(elevation)
  back = jnp.stack([ce * jnp.cos(azimuth_T), ce * jnp.sin(azimuth_T),
                    jnp.full_like(azimuth_T, se)], -1)
  right = jnp.cross(jnp.array([0.0, 0.0, 1.0]), back)
  right = right / jnp.linalg.norm(right, axis=-1, keepdims=True)
  up = jnp.cross(back, right)
  rot = jnp.stack([right, up, back], -1)  # columns
  top = jnp.concatenate([rot, radius * back[..., None]], -1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0]), (azimuth_T.shape[0], 1, 4))
  return jnp.concatenate([top, bottom], -2)


def view_rays(pose_T44, focal: float, height: int, width: int):
  """Every pixel's ray of T views, row-major per view: ((T * H * W, 3), (T * H * W, 3))."""
  t = pose_T44.shape[0]
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing='ij')
  pixel = jnp.tile(jnp.stack([rows.ravel(), cols.ravel()], -1), (t, 1))
  pose = jnp.repeat(pose_T44, height * width, axis=0)
  return pixel_rays(pose, pixel, jnp.full((t * height * width,), focal), height, width)


def render_in_chunks(render_fn, origins_R3, directions_R3, chunk: int):
  """render_fn over `chunk` rays at a time (lax.map), so memory does not grow with R:
  the fine colours (R, 3)."""
  r = origins_R3.shape[0]
  n = -(-r // chunk)
  pad = lambda a: jnp.pad(a, ((0, n * chunk - r), (0, 0))).reshape(n, chunk, 3)
  rgb = jax.lax.map(lambda od: render_fn(*od), (pad(origins_R3), pad(directions_R3)))
  return rgb.reshape(n * chunk, 3)[:r]


# ---------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class Options:
  """NeRF's task_kwargs: the views' intrinsics and what evaluation compares with."""
  height: int = 32
  width: int = 32
  focal: float = 40.0        # pixels, of the orbit `sample` renders
  orbit_radius: float = 4.0  # the orbit's distance to the origin
  test_views: int = 8        # views of the eval split (`psnr` is a mean over them)
  baseline_rgb: tuple = (0.5, 0.5, 0.5)  # the mean training colour: the constant baseline
  chunk: int = 1024          # rays rendered at once by `sample`


def _psnr(mse):
  return -10.0 * np.log10(np.maximum(mse, 1e-12))


def make(config) -> Task:
  """`config.task = 'scene.nerf'`, `config.model_name = 'scene.nerf'`; task_kwargs:
  `Options`. Train metrics `loss` (coarse + fine MSE), `mse_coarse`, `mse_fine`, `psnr`
  (of the batch's fine MSE); eval `psnr`, `psnr_coarse`, `psnr_baseline` (means over the
  test views) and `mse` (fine, over all test pixels)."""
  opts = parse_options(Options, config)
  model = arch.model_from_config(config)
  if not isinstance(model, NeRF):
    raise ConfigError(f'the NeRF objective renders a scene.nerf model; config.model_name is '
                      f'{config.model_name!r}')
  try:
    check(model)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if len(opts.baseline_rgb) != 3:
    raise ConfigError(f'task_kwargs.baseline_rgb needs 3 values, got {opts.baseline_rgb}')
  hw = opts.height * opts.width
  baseline = jnp.asarray(opts.baseline_rgb, jnp.float32)

  def preprocess(example):
    return {'rgb': np.asarray(example['rgb'], np.float32) / 255.0,
            'pixel': np.asarray(example['pixel'], np.int32),
            'pose': np.asarray(example['pose'], np.float32),
            'focal': np.asarray(example['focal'], np.float32),
            'view': np.asarray(example['view'], np.int32)}

  def example_batch(n):
    return {'rgb': jax.ShapeDtypeStruct((n, 3), jnp.float32),
            'pixel': jax.ShapeDtypeStruct((n, 2), jnp.int32),
            'pose': jax.ShapeDtypeStruct((n, 4, 4), jnp.float32),
            'focal': jax.ShapeDtypeStruct((n,), jnp.float32),
            'view': jax.ShapeDtypeStruct((n,), jnp.int32)}

  def rays(batch):
    return pixel_rays(batch['pose'], batch['pixel'], batch['focal'], opts.height, opts.width)

  def init(rng, batch):
    o, d = rays(batch)
    return model.init(rng, o, d)

  def draws(rng, batch):
    """Each ray's uniform draws from the key folded with its index in the dataset."""
    ids = batch['view'] * hw + batch['pixel'][:, 0] * opts.width + batch['pixel'][:, 1]

    def one(i):
      a, b = jax.random.split(jax.random.fold_in(rng, i))
      return (jax.random.uniform(a, (model.num_coarse,)),
              jax.random.uniform(b, (model.num_fine,)))

    return jax.vmap(one)(ids)

  def loss(variables, batch, rng):
    o, d = rays(batch)
    jitter, u = draws(rng, batch)
    out = model.apply(variables, o, d, jitter, u)
    mse_c = jnp.mean((out['rgb_coarse'] - batch['rgb']) ** 2)
    mse_f = jnp.mean((out['rgb_fine'] - batch['rgb']) ** 2)
    value = mse_c + mse_f if model.num_fine else mse_c
    metrics = {'loss': value, 'mse_coarse': mse_c, 'mse_fine': mse_f,
               'psnr': -10.0 * jnp.log10(mse_f)}
    return value, (metrics, {})

  def make_step(builders):
    # The per-ray draws need the step's key without the device folded in (pmap folds it).
    step = builders.supervised(loss)
    return lambda state, batch, rng: step(state, batch, builders.shared_rng(state))

  def evaluate(variables, batch):
    o, d = rays(batch)
    out = model.apply(variables, o, d)
    onehot = jax.nn.one_hot(batch['view'], opts.test_views)  # per-view sums
    se = lambda rgb: ((rgb - batch['rgb']) ** 2).sum(-1)[:, None] * onehot
    return {'se_fine': se(out['rgb_fine']), 'se_coarse': se(out['rgb_coarse']),
            'se_baseline': se(baseline), 'pixels': onehot}

  def finalize_eval(sums, count):
    values = 3.0 * np.asarray(sums['pixels'])  # colour values per view
    seen = values > 0
    per_view = lambda key: _psnr(np.asarray(sums[key])[seen] / values[seen]).mean()
    return {'psnr': per_view('se_fine'), 'psnr_coarse': per_view('se_coarse'),
            'psnr_baseline': per_view('se_baseline'),
            'mse': float(np.asarray(sums['se_fine']).sum()) / (3.0 * count)}

  def sample(variables, batch, rng, *, row_ids, frames=24, elevation=30.0):
    """Row r: an orbit of `frames` views at `elevation` degrees, starting at azimuth
    90 r degrees."""
    del batch, rng  # rendering is deterministic
    render = lambda o, d: model.apply(variables, o, d)['rgb_fine']

    def orbit(row):
      azimuth = 2 * jnp.pi * jnp.arange(frames) / frames + 0.5 * jnp.pi * row
      poses = orbit_poses(azimuth, math.radians(elevation), opts.orbit_radius)
      o, d = view_rays(poses, opts.focal, opts.height, opts.width)
      rgb = render_in_chunks(render, o, d, opts.chunk)
      return jnp.round(jnp.clip(rgb, 0, 1) * 255).astype(jnp.uint8).reshape(
          frames, opts.height, opts.width, 3)

    return {'videos': jax.vmap(orbit)(row_ids)}

  return Task(init=init, loss=loss, example_batch=example_batch, evaluate=evaluate,
              finalize_eval=finalize_eval, preprocess=preprocess, make_step=make_step,
              sample=sample, prompt_batch=unconditional_rows)
