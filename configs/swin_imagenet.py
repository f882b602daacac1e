"""Swin Transformer T/S/B (Liu et al. 2021) on ImageNet-1k at 224x224, torchvision's layout
(swin_t, swin_s, swin_b; v1).

  python -m train.summary --config configs/swin_imagenet.py:variant=T
  python -m train --config configs/swin_imagenet.py:variant=T --workdir runs/swin_t

Arguments: `variant=T|S|B` (default T). `train.summary` prints torchvision's counts:
28,288,354 / 49,606,258 / 87,768,224. Recipe: the paper's (AdamW, lr 1e-3 at batch 1024,
weight decay 0.05, 300 epochs, 20 warm-up epochs, cosine, gradient clipping at 5, label
smoothing 0.1, stochastic depth 0.2 / 0.3 / 0.5) without its RandAugment/Mixup/CutMix/
random erasing, and with weight decay on every parameter (the paper exempts norms, biases
and the relative position bias tables). Not trained here: it needs `imagenet2012` prepared
in `data.data_dir`, and no measurement was made.
"""

from arch.vision import swin
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='T')
  if a.variant not in swin.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(swin.VARIANTS)}')
  c = config_lib.base()
  recipes.transformer_imagenet(c, epochs=300, batch_size=1024, lr=1e-3, warmup_epochs=20)
  c.model_name = 'vision.swin'
  c.model = dict(swin.VARIANTS[a.variant], num_classes=1000)
  c.grad_clip_norm = 5.0
  return c
