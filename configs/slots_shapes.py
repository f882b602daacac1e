"""Slot Attention (Locatello et al. 2020) discovering the objects of procedural multi-shape
scenes (train/datasets/multishapes.py: 32x32 RGB, 2-4 flat-coloured ellipses, rectangles
and triangles over a smooth background; the instance masks serve evaluation only).

  python -m train --config configs/slots_shapes.py --workdir runs/slots_shapes
  python -m train.sample --config configs/slots_shapes.py --workdir runs/slots_shapes

Arguments: `variant=small` (default: 5 slots of 64, T = 3; the model sees the images
area-pooled to 16x16 (`downsample=2`; fg_ari is still taken on the 32x32 masks); encoder 4
convolutions 3x3 of 32 channels; the decoder broadcasts each slot over the full 16x16 grid,
as the paper's Multi-dSprites decoder does, then 3 per-pixel (1x1) layers of 32 channels
and a 3x3 output layer; ReLU convolutions He-initialised; 86,692 parameters) or
`variant=paper` (the paper's CLEVR network: 128x128 inputs, 7 slots of 64, 5x5 layers of
64 channels, broadcast at 8x8 and 4 stride-2 transposed convolutions; 890,180 parameters;
for `train.summary` or real data); `tiny` for tests.

Measured on a 2-core x86-64 CPU shared with other jobs (2026-12-06, 1 device), default
config (batch 16, Adam 2e-3 after 200 linear warmup steps, then constant), on the 500 test
images:

  step   fg_ari   ari (with background)   loss (MSE, pixels in [-1, 1], 16x16)
   1000   0.126    -0.023                  0.0890   (still on the plateau)
   2000   0.429     0.062                  0.0767
   3000   0.425     0.195                  0.0665
   4000   0.431     0.179                  0.0554
  references on the same pixels: every foreground pixel one segment 0.000; k-means on the
  pixels' colours (5 clusters) 0.996 -- the objects are flat, distinct colours, so colour
  clustering alone nearly solves this data, and that number is the bar, not the model's.

24.3 min wall for 4,000 steps with 4 evals (22:29-22:53 UTC), load average 14-15 at the
start and 5-15 during (my own test runs shared the CPU for part of it); 2.5-3.5 steps/s
with the CPU shared, 11 steps/s once it was free. The loss left the plateau between steps
1,000 and 2,000 and kept falling, but fg_ari stopped near 0.43: PARTIAL object discovery,
short of the 0.7 aimed at. In `train.sample`'s picture (docs/samples/slots_shapes.png)
some slots hold one object each (blurred), while the background is split over several
slots and some objects share a slot. Not tried for lack of time: a longer run, lr decay
after the escape, a 3x3 decoder at 16x16.

History (a finding): the first version of this config (32x32 inputs, a 3x3 broadcast
decoder, LeCun init, lr 1e-3 with a cosine decay, 1,200 steps) sat on Slot Attention's
early plateau (blurred mean-colour reconstruction, near-uniform masks, loss 0.100, fg_ari
0.16 against the same 0.996); so did, in scratch runs of the same step code outside the
loop (2026-12-06), 16x16 with the per-pixel decoder at batch 32 and lr 1e-3 (loss 0.089,
fg_ari 0.12 at step 500) and at batch 16 and lr 2e-3 with LeCun init (fg_ari 0.12 at step
1,000). With He init added, the scratch run left the plateau at about step 1,300 (fg_ari
0.29 at 1,500, 0.43 at 2,000). The implementation was checked against the paper first
(softmax over slots, weights + epsilon renormalised over inputs, 1/sqrt(S) logits, the
4-channel ramp position embedding, alpha masks softmaxed over slots): no discrepancy.
"""

from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small', tiny=False)
  c = config_lib.base()
  c.task = 'scene.slots'
  c.model_name = 'scene.slots'
  if a.variant == 'paper':
    c.task_kwargs = dict(image_size=(128, 128), channels=3, max_objects=10)
    c.model = dict(num_slots=7, slot_size=64, iterations=3, mlp_hidden=128,
                   encoder_features=(64, 64, 64, 64), encoder_kernel=5, decoder_init=8,
                   decoder_features=(64, 64, 64, 64, 64), decoder_strides=(2, 2, 2, 2, 1),
                   decoder_kernel=5, decoder_upsample='transpose')
  elif a.variant == 'small':
    # the model sees 16x16 (area-pooled); the metrics are taken on the 32x32 masks
    c.task_kwargs = dict(image_size=(32, 32), channels=3, max_objects=4, downsample=2)
    c.model = dict(num_slots=5, slot_size=64, iterations=3, mlp_hidden=128,
                   encoder_features=(32, 32, 32, 32), encoder_kernel=3, decoder_init=16,
                   decoder_features=(32, 32, 32), decoder_strides=(1, 1, 1),
                   decoder_kernel=1, decoder_upsample='transpose', conv_init='he')
    if a.tiny:
      c.model.update(num_slots=3, slot_size=16, mlp_hidden=16, encoder_features=(8, 8),
                     decoder_init=8, decoder_features=(8, 8), decoder_strides=(2, 1),
                     decoder_kernel=3, decoder_upsample='nearest')
  else:
    raise UserError(f"variant must be 'small' or 'paper', got {a.variant!r}")
  c.data.name = 'multishapes'
  c.data.eval_split = 'test'

  c.batch_size = 8 if a.tiny else 16
  c.eval_batch_size = 8 if a.tiny else 100
  c.total_steps = 4 if a.tiny else 4000
  c.log_every = 1 if a.tiny else 50
  c.eval_every = c.total_steps if a.tiny else 1000
  c.ckpt_every = 2 if a.tiny else 1000
  c.optax_name = 'adam'
  # the paper: 4e-4, 10K warmup steps, then halved every 100K (near constant over a short
  # run); a short run escapes the plateau sooner with larger steps
  c.lr = 2e-3
  c.schedule = 'constant'
  c.warmup_steps = 0 if a.tiny else 200
  c.grad_clip_norm = 1.0
  c.sample.num_samples = 8
  return c
