"""T2T-ViT-14 (Yuan et al. 2021, "Tokens-to-Token ViT") on ImageNet-1k at 224x224, the
official code's t2t_vit_14 (Performer tokens-to-token layers) or t2t_vit_t_14
(Transformer ones).

  python -m train.summary --config configs/t2t_imagenet.py:variant=14
  python -m train --config configs/t2t_imagenet.py:variant=14 --workdir runs/t2t_vit_14

Arguments: `variant=14|t14` (default 14). `train.summary` prints 21,465,806 (t14:
21,465,422), the official models' trainable parameters; the paper's table rounds them to
21.5M (its frozen sinusoid table and, for 14, its 4,096 random features — listed by
summary as 'constants' — bring the official `sum(p.numel())` to 21,545,550 / 21,541,070,
also 21.5M). The recipe is the official main.py's defaults: AdamW at 5e-4 for batch 512,
weight decay 0.05, 10 warmup epochs, cosine decay to 1e-5 over 300 epochs then 10 at
that floor (310 in all), label smoothing 0.1, stochastic depth 0.1, EMA 0.99996; without
its RandAugment, Mixup/CutMix and random erasing, which the loop does not do. Not trained
here: it needs `imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import t2t
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='14')
  if a.variant not in t2t.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(t2t.VARIANTS)}')
  c = config_lib.base()
  # lr 5e-4 for batch 512 (64 on each of 8 GPUs)
  epoch = recipes.transformer_imagenet(c, epochs=310, batch_size=512, lr=5e-4,
                                          warmup_epochs=10)
  c.model_name = 'vision.t2t'
  c.model = dict(t2t.VARIANTS[a.variant], num_classes=1000, stochastic_depth=0.1)
  c.decay_steps = 300 * epoch
  c.lr_min_ratio = 1e-5 / 5e-4
  c.ema_decay = 0.99996
  c.eval_every = 5 * epoch
  return c
