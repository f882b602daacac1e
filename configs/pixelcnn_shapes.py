"""Gated PixelCNN on colour images: the offline procedural shapes (train/datasets/shapes.py:
2-4 coloured ellipses, rectangles and triangles over a smooth background with pixel
noise), area-pooled from 48x48 to 16x16 RGB. An autoregressive model of the 256 levels of
each channel in raster order, red then green then blue within a pixel (masked colour
groups and a 256-way softmax per channel, as in the PixelCNN and Gated PixelCNN papers;
arch/generative/pixelcnn.py); eval: test bits/dim and nll (nats per image).

  python -m train --config configs/pixelcnn_shapes.py --workdir runs/pixelcnn_shapes
  python -m train.sample --config configs/pixelcnn_shapes.py --workdir runs/pixelcnn_shapes

Arguments: `output=softmax|logistic_mix` (or PixelCNN++'s discretized mixture of 10
logistics whose green and blue means move linearly with the pixel's red and green),
`tiny` (tests).

Measured: see the end of this docstring (filled in from the runs).
"""

from arch.generative import pixelcnn
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, output='softmax', tiny=False)
  if a.output not in pixelcnn.OUTPUTS:
    raise UserError(f'unknown output {a.output!r}; valid: {", ".join(pixelcnn.OUTPUTS)}')
  c = config_lib.base()
  c.task = 'generative.pixelcnn'
  c.task_kwargs = dict(input_size=(8, 8) if a.tiny else (16, 16), channels=3)
  c.data.name = 'shapes'
  c.data.eval_split = 'test'
  c.model_name = 'generative.pixelcnn:GatedPixelCNN'
  c.model = dict(features=48, num_layers=8, first_kernel=7, kernel=3, dropout=0.1,
                 output=a.output, num_mixtures=10)
  if a.tiny:
    c.model.update(features=6, num_layers=2, num_mixtures=3)
  c.batch_size = 8 if a.tiny else 32
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.sample.num_samples = 16
  return c
