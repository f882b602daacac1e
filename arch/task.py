"""The contract between a family's objective and the training loop.

A task module (e.g. `arch/vision/classification.py`) defines `make(config) -> Task`.
The loop calls only these pure functions; it never names an architecture.

Shapes: every function takes and returns pytrees of arrays; `batch` is a dict of
arrays whose leading axis is the (local or global) batch.
"""

import dataclasses
import difflib
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

Variables = Any  # {'params': ..., 'batch_stats': ..., ...}

# The axis name the loop's pmap uses for the device axis. Models that reduce over the batch
# across devices (BatchNorm's statistics) take it as their `axis_name` attribute under pmap;
# `arch.model_from_config` passes it.
PMAP_AXIS = 'data'



class ConfigError(ValueError):
  """A task's config is inconsistent; the CLI shows it as a one-line error."""


class Task(NamedTuple):
  """Pure functions an objective exposes to the loop."""
  # init(rng, batch) -> variables
  init: Callable[..., Variables]
  # loss(variables, batch, rng) -> (scalar, (metrics dict, updated non-param variables))
  loss: Callable[..., Any]
  # example_batch(batch_size) -> dict of jax.ShapeDtypeStruct: the batch `init` expects,
  # for `train.summary` and shape checks without data.
  example_batch: Callable[[int], dict]
  # evaluate(variables, batch) -> dict of per-example metric arrays shaped (B, ...);
  # the loop sums them over the eval split (padding rows excluded with the loop's row mask).
  evaluate: Optional[Callable[..., dict]] = None
  # finalize_eval(sums, count) -> metrics: turns the split's sums into the reported
  # metrics (e.g. mean IoU from summed per-class intersections and unions). Default:
  # every sum divided by the number of examples, i.e. the mean over the split.
  finalize_eval: Optional[Callable[[dict, float], dict]] = None
  # preprocess(example) -> example, on the host in the input pipeline (numpy in/out).
  preprocess: Optional[Callable[[dict], dict]] = None
  # sample(variables, batch, rng, *, row_ids, **options) -> {'tokens': (B, N)} for text,
  # {'images': (B, H, W, C) uint8} for images, {'videos': (B, T, H, W, C) uint8} for
  # clips, {'audio': (B, N) float in [-1, 1] or int16, 'sample_rate': (B,)} for sound:
  # generative families, for the sampler
  # driver (`train/sample.py`), which runs it under jit with the batch sharded. Options are
  # static (max_new_tokens, temperature, top_k, top_p, beam_size for text; steps, ... for
  # other families). row_ids (B,) is each row's sample index: a row's randomness comes
  # from fold_in(rng, row_id) alone, so it does not depend on the batch size or sharding.
  # A text sampler may also return the input the tokens continue or answer, printed in
  # the prompt's place: 'source' (B, S) (a denoiser's corrupted passage, '<mask>' shown)
  # or 'prompt' (B, P) (the prompt it took from its eval example where none was given).
  sample: Optional[Callable[..., Any]] = None
  # prompt_batch(prompts, num_samples) -> the host batch `sample` conditions on, one row
  # per sample, from one list of token ids per sample (an LM's prompt, a translation's
  # source sentence). Families that take no text get prompts=None and return
  # `num_samples` rows: class labels for a class-conditional model, `unconditional_rows`
  # for an unconditional one (the sampler pads and shards the batch by its rows).
  prompt_batch: Optional[Callable[..., dict]] = None
  # True: the sampler also passes prompt_batch `examples=`, a dict of host arrays with
  # one eval-split example per sample row (the split's first rows, preprocessed): what a
  # prompt is about, e.g. the image Flamingo answers a question on.
  prompt_examples: bool = False
  # True: `sample` continues its prompt's text (an LM; Flamingo's answer after its
  # question), so the sampler prints prompt + completion; False: the output stands apart
  # from its input (a translation of a source sentence), printed as 'input => output'.
  continues_prompt: bool = False
  # features(variables, batch) -> (B, F) float: the representation that evaluators named
  # in `config.evals` (linear probe, k-NN; train/evaluators.py) read, frozen; or a
  # dict {'features': (B, F), 'logits': (B, K)} from a classifier (the Fréchet distance's
  # feature space and class predictions).
  features: Optional[Callable[..., Any]] = None
  # phases: ((group, loss), ...): the custom update of a model with several networks and
  # one optimizer each (a GAN's discriminator and generator). `params` is then a dict keyed
  # by group; each training step runs the phases in order, phase i taking the gradient of
  # its loss(variables, batch, rng) -> (scalar, (metrics, updated non-param variables)),
  # shaped like `loss`, with respect to params[group] alone, and applying that group's
  # optimizer (`config.optimizers[group]` overrides the config's optimizer fields). A phase
  # sees the params and non-param variables the phases before it produced; a group may
  # appear more than once (k discriminator steps per generator step). `loss` is unused.
  phases: tuple = ()
  # make_step(builders) -> step(state, batch, rng) -> (state, metrics): a task that owns its
  # update (an RL agent's rollout and epochs of minibatch updates in one jitted step). The
  # loop passes its step builders (train/steps.py `Builders`: `supervised(loss)` for one
  # gradient step with the config's optimizer, `phased(phases)`, `mean(tree)` over
  # devices); the step composes them and returns metrics with at least `loss`,
  # `grad_norm` and `learning_rate`. The loop still draws the step's rng, advances
  # `state.step`, keeps the EMA and guards against non-finite steps. `state` is the loop's
  # TrainState (`.params`, `.extra`, `.opt_state`, `.step`; `.replace(...)`).
  make_step: Optional[Callable[[Any], Callable[..., Any]]] = None
  # input(process_index, process_count) -> this process's train batches in place of the
  # config's dataset: an iterator with `get_state() -> JSON-able` and `set_state(state)`
  # (saved with every checkpoint, so a resumed run continues exactly), yielding dicts of
  # host arrays with a leading axis of batch_size / process_count. `arch.task.no_input`
  # is the one for a task that reads no data (an RL agent): empty batches, the step is
  # the state's.
  input: Optional[Callable[[int, int], Any]] = None
  # collate(examples) -> batch: how the loop batches examples that are not a stack of
  # equal shapes (graphs of different sizes concatenated into static padded budgets).
  # The loop splits each process's batch into one group per local data-parallel device and
  # stacks the collated groups on a new leading axis, so `loss` and `evaluate` see (S, ...)
  # arrays of S shards (the shard axis is sharded over the devices); `evaluate` returns
  # per-example metrics shaped (S, G) for G examples per shard.
  collate: Optional[Callable[[list], dict]] = None
  # evaluate_run(variables, rng) -> {metric: scalar}: an evaluation that reads no split
  # (episode returns, ODE trajectories), run under jit at every eval beside `evaluate`.
  evaluate_run: Optional[Callable[..., dict]] = None


class NoInput:
  """The train input of a task that reads no data: endless empty batches."""

  def __iter__(self):
    return self

  def __next__(self):
    return {}

  def get_state(self):
    return {}

  def set_state(self, state):
    del state


def no_input(process_index: int, process_count: int) -> NoInput:
  """`Task.input` for a task that reads no data (its step gets empty batches)."""
  del process_index, process_count
  return NoInput()


def row_keys(rng, row_ids_B):
  """One PRNG key per sample row, from its row id alone: fold_in(rng, row_id) (B,)."""
  return jax.vmap(lambda r: jax.random.fold_in(rng, r))(row_ids_B)


def unconditional_rows(prompts, num_samples: int) -> dict:
  """`prompt_batch` of a family that conditions on nothing: {'row': (num_samples,) zeros},
  one row per sample; a text prompt is a ConfigError."""
  if prompts is not None and any(len(p) for p in prompts):
    raise ConfigError('this model conditions on nothing and takes no prompt')
  return {'row': np.zeros((num_samples,), np.int32)}


def class_rows(prompts, num_samples: int, num_classes: int) -> dict:
  """`prompt_batch` of a family conditioned on a class label: {'label': 0, 1, ...
  cycling over `num_classes`}; `unconditional_rows` when num_classes is 0. A text prompt
  is a ConfigError."""
  if not num_classes:
    return unconditional_rows(prompts, num_samples)
  if prompts is not None and any(len(p) for p in prompts):
    raise ConfigError('this model conditions on class labels and takes no prompt')
  return {'label': (np.arange(num_samples) % num_classes).astype(np.int32)}


def parse_options(options_cls, config, key: str = 'task_kwargs'):
  """`options_cls(**config[key])`: a task's typed options (a frozen dataclass whose fields
  are the option names with their defaults) from the config. An unknown name is a
  ConfigError naming the valid ones, so `c.task_kwargs.label_smothing = 0.1` in a config
  file fails as loudly as `--config.task_kwargs.label_smothing=0.1` does; a value whose
  type cannot be the field's (a string for a number, a number for a bool) is one too."""
  given = dict((config.get(key) if hasattr(config, 'get') else config[key]) or {})
  fields = {f.name: f for f in dataclasses.fields(options_cls)}
  for name, value in given.items():
    if name not in fields:
      hits = difflib.get_close_matches(str(name), list(fields), n=3)
      hint = f' (did you mean {", ".join(hits)}?)' if hits else ''
      raise ConfigError(f'unknown config.{key}.{name}{hint}; valid for '
                        f'{options_cls.__module__.removeprefix("arch.")}: '
                        f'{", ".join(sorted(fields)) or "(none)"}')
    _check_type(key, name, value, fields[name])
  return options_cls(**{k: _plain(v) for k, v in given.items()})


def _plain(value):
  """ConfigDict / FrozenConfigDict values as plain dicts (options are plain data)."""
  return value.to_dict() if hasattr(value, 'to_dict') else value


def _check_type(key, name, value, field):
  default = field.default if field.default is not dataclasses.MISSING else None
  if default is None or value is None:
    return
  numbers = (int, float)
  wrong = (
      (isinstance(default, bool) and not isinstance(value, (bool, np.bool_)))
      or (isinstance(default, numbers) and not isinstance(default, bool)
          and (isinstance(value, (bool, str)) or not isinstance(value, (numbers, np.number))))
      or (isinstance(default, str) and not isinstance(value, str))
      or (isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list))))
  if wrong:
    raise ConfigError(f'config.{key}.{name}={value!r}: expected a {type(default).__name__} '
                      f'like its default {default!r}')
