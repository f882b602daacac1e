"""Evaluation episodes as videos: gymnax's classic-control states drawn into RGB frames by
pure jnp rasterisation (so a whole batch of episodes plays and renders under one jit), and
the `sample` the RL tasks give `python -m train.sample`.

gymnax's own renderers go through matplotlib on the host, one frame at a time. Here each
scene is a few shapes in world coordinates (rectangles, capsules = thick segments, discs)
whose signed distances are evaluated at every pixel centre; coverage is
clip(1/2 - d / pixel, 0, 1), a one-pixel anti-aliased edge. Scenes follow the Gym
conventions the environments come from:
  CartPole-v1   the track, the cart at x and the pole (half-length `length`) at angle theta
                from the vertical (tip at x + 2 l sin(theta)); the view is the
                termination range +-x_threshold with a margin.
  Acrobot-v1    two links hanging from the pivot, angle 0 straight down (joint 2 measured
                from link 1), and the goal height (the tip above 1 link length).
  Pendulum-v1   one rod from the pivot, theta 0 upright, and an arc for the last torque.
  MountainCar-v0 / MountainCarContinuous-v0  the hill y = 0.45 sin(3x) + 0.55, the car on
                it and the flag at the goal position.

`episodes(...)` plays one episode per row from a reset until it ends (or `max_steps`), and
records every `stride`-th state; after the episode ends its last state is held, so every
video has the same number of frames and a finished episode shows its final position.

Dimension key: N episodes (sample rows), T frames, H, W pixels.
"""

import functools

import flax.serialization
import jax
import jax.numpy as jnp

from arch.task import ConfigError, row_keys, unconditional_rows

BACKGROUND = (1.0, 1.0, 1.0)
INK = (0.15, 0.15, 0.2)
ACCENT = (0.85, 0.45, 0.15)
TRACK = (0.6, 0.6, 0.6)
GOAL = (0.2, 0.6, 0.3)


def _coverage(distance, pixel):
  """Anti-aliased coverage in [0, 1] of a shape whose signed distance is `distance`."""
  return jnp.clip(0.5 - distance / pixel, 0.0, 1.0)


def box(x, y, centre, half):
  """Signed distance from points (x, y) to an axis-aligned box."""
  dx = jnp.abs(x - centre[0]) - half[0]
  dy = jnp.abs(y - centre[1]) - half[1]
  outside = jnp.sqrt(jnp.maximum(dx, 0.0) ** 2 + jnp.maximum(dy, 0.0) ** 2)
  return outside + jnp.minimum(jnp.maximum(dx, dy), 0.0)


def capsule(x, y, a, b, radius):
  """Signed distance from points (x, y) to the segment a-b thickened by `radius`."""
  ax, ay = x - a[0], y - a[1]
  bx, by = b[0] - a[0], b[1] - a[1]
  t = jnp.clip((ax * bx + ay * by) / jnp.maximum(bx * bx + by * by, 1e-12), 0.0, 1.0)
  return jnp.sqrt((ax - t * bx) ** 2 + (ay - t * by) ** 2) - radius


def disc(x, y, centre, radius):
  return jnp.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2) - radius


class Canvas:
  """An H x W picture of the world rectangle [x0, x1] x [y0, y1] (y up): pixel centres in
  world units, and `paint` that lays shapes over it in order."""

  def __init__(self, height: int, width: int, x_range, y_range):
    self.pixel = max((x_range[1] - x_range[0]) / width, (y_range[1] - y_range[0]) / height)
    cx, cy = (x_range[0] + x_range[1]) / 2, (y_range[0] + y_range[1]) / 2
    self.x = cx + (jnp.arange(width) + 0.5 - width / 2) * self.pixel  # (W,)
    self.y = cy - (jnp.arange(height) + 0.5 - height / 2) * self.pixel  # (H,): row 0 on top
    self.X, self.Y = self.x[None, :], self.y[:, None]
    self.shape = (height, width)

  def blank(self):
    return jnp.broadcast_to(jnp.asarray(BACKGROUND, jnp.float32), (*self.shape, 3))

  def paint(self, image_HW3, distance_HW, colour):
    alpha = _coverage(distance_HW, self.pixel)[..., None]
    return image_HW3 * (1 - alpha) + alpha * jnp.asarray(colour, jnp.float32)


def _cartpole(state, params, canvas_size):
  h, w = canvas_size
  span = float(params.x_threshold) * 1.25
  c = Canvas(h, w, (-span, span), (-0.5, 1.5))  # centred on y = 0.5, the width decides
  length = 2 * float(params.length)
  x, theta = state['x'], state['theta']
  img = c.blank()
  img = c.paint(img, jnp.abs(c.Y - (-0.2)) - 0.5 * c.pixel, TRACK)
  img = c.paint(img, box(c.X, c.Y, (x, 0.0), (0.25, 0.15)), INK)
  tip = (x + length * jnp.sin(theta), 0.1 + length * jnp.cos(theta))
  img = c.paint(img, capsule(c.X, c.Y, (x, 0.1), tip, 0.05), ACCENT)
  return c.paint(img, disc(c.X, c.Y, (x, 0.1), 0.04), TRACK)


def _acrobot(state, params, canvas_size):
  h, w = canvas_size
  reach = float(params.link_length_1 + params.link_length_2) * 1.1
  c = Canvas(h, w, (-reach * w / h, reach * w / h), (-reach, reach))
  t1, t2 = state['joint_angle1'], state['joint_angle2']
  l1, l2 = float(params.link_length_1), float(params.link_length_2)
  p1 = (l1 * jnp.sin(t1), -l1 * jnp.cos(t1))
  p2 = (p1[0] + l2 * jnp.sin(t1 + t2), p1[1] - l2 * jnp.cos(t1 + t2))
  img = c.blank()
  img = c.paint(img, jnp.abs(c.Y - l1) - 0.5 * c.pixel, GOAL)  # the tip must rise above it
  img = c.paint(img, capsule(c.X, c.Y, (0.0, 0.0), p1, 0.08), INK)
  img = c.paint(img, capsule(c.X, c.Y, p1, p2, 0.08), ACCENT)
  img = c.paint(img, disc(c.X, c.Y, (0.0, 0.0), 0.06), TRACK)
  return c.paint(img, disc(c.X, c.Y, p1, 0.06), TRACK)


def _pendulum(state, params, canvas_size):
  del params
  h, w = canvas_size
  c = Canvas(h, w, (-1.3 * w / h, 1.3 * w / h), (-1.3, 1.3))
  theta, u = state['theta'], state['last_u']
  tip = (-jnp.sin(theta), jnp.cos(theta))
  img = c.blank()
  # The torque: a ring arc whose extent grows with |u| (max torque 2), on the side it turns.
  r = jnp.sqrt(c.X ** 2 + c.Y ** 2)
  angle = jnp.arctan2(c.X, -c.Y)  # 0 straight down, positive towards +x
  on_arc = jnp.abs(angle * jnp.sign(u)) < jnp.pi * jnp.abs(u) / 2
  img = c.paint(img, jnp.where(on_arc, jnp.abs(r - 0.25) - 0.03, 1.0), GOAL)
  img = c.paint(img, capsule(c.X, c.Y, (0.0, 0.0), tip, 0.08), ACCENT)
  return c.paint(img, disc(c.X, c.Y, (0.0, 0.0), 0.05), INK)


def _mountain_car(state, params, canvas_size):
  h, w = canvas_size
  lo, hi = float(params.min_position), float(params.max_position)
  c = Canvas(h, w, (lo, hi), (0.0, (hi - lo) * h / w))
  hill = lambda p: 0.45 * jnp.sin(3 * p) + 0.55
  img = c.blank()
  img = c.paint(img, c.Y - hill(c.X), TRACK)  # the ground below the curve
  goal = float(params.goal_position)
  img = c.paint(img, capsule(c.X, c.Y, (goal, hill(goal)), (goal, hill(goal) + 0.15), 0.008),
                INK)
  img = c.paint(img, box(c.X, c.Y, (goal + 0.04, hill(goal) + 0.13), (0.04, 0.02)), GOAL)
  pos = state['position']
  return c.paint(img, disc(c.X, c.Y, (pos, hill(pos) + 0.05), 0.05), ACCENT)


# gymnax environment name -> draw(state dict of scalars, env params, (H, W)) -> (H, W, 3).
SCENES = {'CartPole-v1': _cartpole, 'Acrobot-v1': _acrobot, 'Pendulum-v1': _pendulum,
          'MountainCar-v0': _mountain_car, 'MountainCarContinuous-v0': _mountain_car}


def _check_scene(env_name: str):
  if env_name not in SCENES:
    raise ConfigError(f'no renderer for {env_name!r}; arch/rl/render.py draws '
                      f'{", ".join(SCENES)}')


def frame(env_name: str, state: dict, env_params, size=(64, 96)):
  """One uint8 (H, W, 3) picture of an environment state (a dict of scalar fields)."""
  _check_scene(env_name)
  image = SCENES[env_name](state, env_params, tuple(size))
  return jnp.round(jnp.clip(image, 0, 1) * 255).astype(jnp.uint8)


def episode(env, env_params, act, key, max_steps: int, stride: int):
  """One episode from a reset: (every `stride`-th state, the first one the reset's and the
  last one held after the episode ends, as a dict of (T,) fields; the return; the
  length). `act(obs_O, key) -> action`. Steps with the environment's own transition
  (`step_env`, which does not reset) and gymnax's time limit."""
  k_reset, k_run = jax.random.split(key)
  obs, state = env.reset(k_reset, env_params)

  def body(carry, key):
    obs, state, ret, length, alive = carry
    k_act, k_env = jax.random.split(key)
    new_obs, new, reward, terminated, _ = env.step_env(k_env, state, act(obs, k_act),
                                                       env_params)
    done = terminated | env.is_truncated(new, env_params)
    keep = lambda a, b: jnp.where(alive, a, b)
    carry = (jax.tree.map(keep, new_obs, obs), jax.tree.map(keep, new, state),
             ret + jnp.where(alive, reward, 0.0), length + alive.astype(jnp.int32),
             alive & ~done)
    return carry, flax.serialization.to_state_dict(state)

  carry = (obs, state, jnp.float32(0.0), jnp.int32(0), jnp.bool_(True))
  (_, last, ret, length, _), states = jax.lax.scan(body, carry,
                                                   jax.random.split(k_run, max_steps))
  last = flax.serialization.to_state_dict(last)
  states = jax.tree.map(lambda s, l: jnp.concatenate([s, l[None]]), states, last)
  return jax.tree.map(lambda s: s[::stride], states), ret, length


def board(cells, agent_mark, size: int = 96):
  """A tic-tac-toe position as a uint8 (size, size, 3) picture: `cells` (9,) row-major with
  -1 empty, 0 the first mover's X, 1 the second mover's O (pgx's board); the marks of
  `agent_mark` (0 or 1) in the accent colour, the opponent's in ink."""
  c = Canvas(size, size, (0.0, 3.0), (0.0, 3.0))
  img = c.paint(c.blank(), jnp.abs(box(c.X, c.Y, (1.5, 1.5), (1.5, 1.5))) - 1.5 * c.pixel, INK)
  for k in (1.0, 2.0):
    img = c.paint(img, capsule(c.X, c.Y, (k, 0.1), (k, 2.9), 0.02), TRACK)
    img = c.paint(img, capsule(c.X, c.Y, (0.1, k), (2.9, k), 0.02), TRACK)
  for i in range(9):
    x, y = i % 3 + 0.5, 2.5 - i // 3
    d = 0.28
    cross = jnp.minimum(capsule(c.X, c.Y, (x - d, y - d), (x + d, y + d), 0.06),
                        capsule(c.X, c.Y, (x - d, y + d), (x + d, y - d), 0.06))
    ring = jnp.abs(disc(c.X, c.Y, (x, y), 0.3)) - 0.06
    for mark, shape in ((0, cross), (1, ring)):
      colour = jnp.where(agent_mark == mark, jnp.asarray(ACCENT), jnp.asarray(INK))
      alpha = _coverage(shape, c.pixel)[..., None] * (cells[i] == mark)
      img = img * (1 - alpha) + alpha * colour
  return jnp.round(jnp.clip(img, 0, 1) * 255).astype(jnp.uint8)


def connect_four(cells, agent_mark, size: int = 96):
  """A Connect Four position as a uint8 (size, size 7 / 6, 3) picture: `cells` (42,)
  row-major from the top row with -1 empty, 0 the first mover's, 1 the second's (pgx's
  board); the agent's (`agent_mark`) discs in the accent colour, the opponent's in ink,
  empty holes as rings."""
  c = Canvas(size, size * 7 // 6, (0.0, 7.0), (0.0, 6.0))
  img = c.blank()
  for i in range(42):
    x, y = i % 7 + 0.5, 5.5 - i // 7
    hole = disc(c.X, c.Y, (x, y), 0.4)
    img = c.paint(img, jnp.abs(hole) - 0.03, TRACK)
    colour = jnp.where(agent_mark == cells[i], jnp.asarray(ACCENT), jnp.asarray(INK))
    alpha = _coverage(hole, c.pixel)[..., None] * (cells[i] >= 0)
    img = img * (1 - alpha) + alpha * colour
  return jnp.round(jnp.clip(img, 0, 1) * 255).astype(jnp.uint8)


def make_sample(env_name: str, env, env_params, act_fn):
  """`Task.sample` and `Task.prompt_batch` rendering evaluation episodes, one per row:
  sample(variables, batch, rng, *, row_ids, max_steps, stride, height, width, greedy) ->
  {'episodes': (N, T, H, W, 3) uint8, 'episode_return': (N,), 'episode_length': (N,)}.
  `act_fn(params, greedy) -> act(obs_NO, key) -> actions (N,)` is the agent's policy."""
  _check_scene(env_name)

  def sample(variables, batch, rng, *, row_ids, max_steps: int = 0, stride: int = 2,
             height: int = 96, width: int = 144, greedy: bool = True):
    del batch
    steps = int(max_steps or env_params.max_steps_in_episode)
    act = act_fn(variables['params'], greedy)
    one = lambda obs, key: act(obs[None], key)[0]
    run = functools.partial(episode, env, env_params, one, max_steps=steps,
                            stride=max(1, int(stride)))
    states_N, ret_N, length_N = jax.vmap(run)(row_keys(rng, row_ids))
    draw = lambda s: frame(env_name, s, env_params, (height, width))
    videos = jax.vmap(jax.vmap(draw))(states_N)
    return {'episodes': videos, 'episode_return': ret_N, 'episode_length': length_N}

  return sample, unconditional_rows
