"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A simple framework for contrastive
learning of visual representations").

Two random views of every image (arch/multimodal/augment.py), one encoder f (the config's
backbone with `num_classes=0`) and projection head g (Linear-ReLU-Linear, 2048 -> 128 for
ResNet-50), and the NT-Xent loss over the 2B views of the global batch with temperature
tau (`temperature`, the paper's 0.5 at batch 256 ... 0.1 at 4096). The representation
that probes read is f's output, before g. Under jit the batch is one global array, so
BatchNorm statistics are global as in the paper's "global BN"; under pmap the backbone
syncs them over the device axis.

Config keys read: `model_name`, `model` (the backbone), `task_kwargs` with `input_size`,
`channels`, `temperature`, `proj_hidden`, `proj_dim`, `augment` (see augment.views).
Train metrics: `loss`, `contrastive_accuracy` (the positive ranked first among 2B - 1).
"""

import jax

from arch.multimodal.contrastive import Embedder, ImageSetup, nt_xent
from arch.task import Task


def make(config) -> Task:
  s = ImageSetup(config)
  tau = float(s.kwargs.get('temperature', 0.5))
  model = Embedder(s.backbone, int(s.kwargs.get('proj_hidden', 2048)),
                   int(s.kwargs.get('proj_dim', 128)))

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
