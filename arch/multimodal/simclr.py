"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A simple framework for contrastive
learning of visual representations").

Two random views of every image (arch/multimodal/augment.py), one encoder f (the config's
backbone with `num_classes=0`) and projection head g (Linear-ReLU-Linear, 2048 -> 128 for
ResNet-50), and the NT-Xent loss over the 2B views of the global batch with temperature
tau (`temperature`, the paper's 0.5 at batch 256 ... 0.1 at 4096). The representation
that probes read is f's output, before g. Under jit the batch is one global array, so
BatchNorm statistics are global as in the paper's "global BN"; under pmap the backbone
syncs them over the device axis.

Config keys read: `model_name`, `model` (the backbone), `task_kwargs` (`Options`):
`input_size`, `channels`, `augment`, `host_size` (contrastive.ImageOptions), `temperature`,
`proj_hidden`, `proj_dim`.
Train metrics: `loss`, `contrastive_accuracy` (the positive ranked first among 2B - 1).
"""

import dataclasses

import jax

from arch.multimodal.contrastive import Embedder, ImageOptions, ImageSetup, nt_xent
from arch.task import Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options(ImageOptions):
  """SimCLR's task_kwargs."""
  temperature: float = 0.5
  proj_hidden: int = 2048  # the projection head's hidden width
  proj_dim: int = 128  # ... and output width


def make(config) -> Task:
  opts = parse_options(Options, config)
  s = ImageSetup(config, opts)
  tau = float(opts.temperature)
  model = Embedder(s.backbone, int(opts.proj_hidden), int(opts.proj_dim))

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, s.images(batch), train=False)

  def loss(variables, batch, rng):
    k1, k2, k_drop = jax.random.split(rng, 3)
    x = s.images(batch)
    both = jax.numpy.concatenate([s.views(k1, x), s.views(k2, x)])  # one pass, shared BN
    state = [k for k in variables if k != 'params']
    z, updates = model.apply(variables, both, train=True, rngs={'dropout': k_drop},
                             mutable=state)
    b = x.shape[0]
    value, acc = nt_xent(z[:b], z[b:], tau, s.axis_name)
    return value, ({'loss': value, 'contrastive_accuracy': acc}, dict(updates))

  return Task(init=init, loss=loss, example_batch=s.example_batch, preprocess=s.preprocess(),
              features=s.features_fn(model))
