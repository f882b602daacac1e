"""The contract between a family's objective and the training loop.

A task module (e.g. `arch/vision/classification.py`) defines `make(config) -> Task`.
The loop calls only these pure functions; it never names an architecture.

Shapes: every function takes and returns pytrees of arrays; `batch` is a dict of
arrays whose leading axis is the (local or global) batch.
"""

from typing import Any, Callable, NamedTuple, Optional

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
  # sample(variables, batch, rng, **options) -> {'tokens': (B, N)} (text; other keys for
  # other modalities): generative families, for the sampler driver (`train/sample.py`),
  # which runs it under jit with the batch sharded. Options are static: max_new_tokens,
  # temperature, top_k, top_p, beam_size, and row_ids (B,) (each row's sample index, so
  # a sample's randomness does not depend on the batch size or sharding).
  sample: Optional[Callable[..., Any]] = None
  # prompt_batch(prompts, num_samples) -> the host batch `sample` conditions on, from one
  # list of token ids per sample (e.g. an LM's prompt, a translation's source sentence).
  prompt_batch: Optional[Callable[..., dict]] = None
  # features(variables, batch) -> (B, F) float: the representation that evaluators named
  # in `config.evaluators` (linear probe, k-NN; train/evaluators.py) read, frozen.
  features: Optional[Callable[..., Any]] = None
  # update(state, batch, rng, ...): a custom step replacing one gradient step.
  update: Optional[Callable[..., Any]] = None
