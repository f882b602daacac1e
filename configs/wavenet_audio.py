"""WaveNet on the offline `tones` (one-second 4 kHz clips of pentatonic melodies): a
categorical model of the 256 mu-law levels of each sample given the ones before
(arch/generative/wavenet.py), trained on bits per sample; eval: test bits/sample and nll
(nats per clip) over whole clips.

  python -m train --config configs/wavenet_audio.py --workdir runs/wavenet_audio
  python -m train.sample --config configs/wavenet_audio.py --workdir runs/wavenet_audio

Default: 2 stacks of dilations 1..64 (14 layers, receptive field 256 samples = 64 ms,
about 17 periods of the lowest note), residual/dilation channels 32, skip 64 (138,752
params); random crops of 500 scored samples fed with their 255 samples of context, batch 8,
1,000 steps, Adam 2e-3, cosine, clip 1.

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdir /tmp: test bits/sample
4.555 at step 500, 4.169 at step 1000 (nll 11,560 nats per clip); 6.7 min wall (6.0 min
CPU: 4.9 user + 1.1 sys) with one other training job beside it (1-minute load average 5.6
at the start, 4.1 to 5.2 during the run); the same numbers in 25.3 min under load 15-17. Reference points
(exact): uniform 8 bits/sample; an i.i.d. categorical over the 256 mu-law levels fitted
to the train split 7.422 (mu-law makes the level histogram nearly flat); the noise floor
2.358, the mean of -log2 P(level | the clean signal) under the data's Gaussian noise
(sigma 0.005) and int16 rounding, what a model that knew every note's pitch, harmonics,
loudness and envelope would pay.

Samples (`python -m train.sample ... --num_samples 16 --seed 0`, 19 s wall at load 13.6):
in every 1024-sample window (hop 500, Hann, zero-padded FFT) of the 16 clips the peak
frequency lies within 13 cents of a pentatonic pitch (median 0.6 cents; the data: 0.4);
notes decay like the data's and 7 of 16 clips change note, though the pitches are skewed
(the first notes: 880 Hz 6 times, 587 Hz 5 times, 5 others once; the data is uniform over
the 10) and louder than the data's at the onset (rms 0.45 vs 0.1-0.3). At step 500 the
tones were as clean (median 1.2 cents) but barely decayed and rarely changed note.

Arguments: `variant=small|paper` (small: the default above; paper: the paper's 30 layers,
3 stacks of 1..512, receptive field 3,071, with residual/dilation 32 and skip 512 (our
widths), 1,072,704 params, far too slow for this CPU; not trained here), `conditional`
(global conditioning on the first note's pitch; samples cycle through the 10 pitches; not
trained here), `crop=N` (scored samples per random crop, default 500; 0 = whole clips),
`tiny` (tests).
"""

from arch.generative import wavenet
from train import config_lib
from train.errors import UserError

VARIANTS = {
    'small': dict(residual_channels=32, dilation_channels=32, skip_channels=64, num_stacks=2,
                  layers_per_stack=7),
    'paper': wavenet.PAPER,
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small', conditional=False, crop=500, tiny=False)
  if a.variant not in VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(VARIANTS)}')
  c = config_lib.base()
  c.task = 'generative.wavenet'
  c.task_kwargs = dict(length=4000, sample_rate=4000, crop=a.crop, sample_length=4000)
  c.data.name = 'tones'
  c.data.eval_split = 'test'
  c.model_name = 'generative.wavenet'
  c.model = dict(wavenet.TINY if a.tiny else VARIANTS[a.variant],
                 num_classes=10 if a.conditional else 0)
  if a.tiny:
    c.task_kwargs.update(crop=64, sample_length=64)
  c.batch_size = 2 if a.tiny else 8
  c.eval_batch_size = 2 if a.tiny else 20
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.lr = 2e-3
  c.schedule = 'cosine'
  c.warmup_steps = 50
  c.grad_clip_norm = 1.0
  c.sample.num_samples = 16
  return c
