"""RETRO (Borgeaud et al. 2021; arch/sequence/retro.py) on the pydoc help() topics, byte
level, against the same decoder without retrieval, on a held-out split whose documents have
near neighbours in the database (`pydoc_retro`, train/datasets/pydoc_retro.py).

  python -m train --config configs/retro_pydoc.py --workdir runs/retro
  python -m train --config configs/retro_pydoc.py:retrieval=False --workdir runs/retro_off
  python -m train.sample --config configs/retro_pydoc.py --workdir runs/retro \\
      --prompt 'The import statement' --num_samples 2

Arguments: `retrieval` (default True; False: the same decoder, no encoder or chunked
cross-attention), `variant=cpu` (default, below) or `tiny` (tests).

Data: 11 of the 79 topics (46,431 bytes, 10%) are validation: each has at least 89% of its
32-byte chunks (at multiples of 32) verbatim somewhere in the 68 train topics (418,539
bytes; 9 of the 11 at 99-100%), which are the database. Training windows (129 bytes: 4
chunks of 32) start at chunk-aligned offsets of the train stream, and each chunk's query
leaves out the database entries of its own documents.

Keys: the frozen encoder `config.frozen.encoder` is configs/gpt_pydoc.py:variant=tiny
(2 layers, width 32) trained on pydoc_retro's train split (600 steps, validation 2.484
nats/byte); the key of a chunk is the mean of its final-norm states (32 numbers). The loop
trains it first in WORKDIR/frozen_encoder unless `--config.frozen.encoder.workdir` names one.

Model (cpu): 4 decoder blocks, width 128, 4 heads, 128-byte context, chunks of 32, 2
neighbours of 64 bytes each, a 1-block neighbour encoder, chunked cross-attention after
blocks 1 and 3 with a learned logit bias per head and relative distance, started at 4.0 at
the aligned distance (query i of a chunk group reads neighbour position M + i):
1,249,400 parameters (843,008 without retrieval). The database holds an entry at every byte
(task_kwargs.database_stride=1: 419,553 entries), so that a passage copied verbatim has an
entry at the query's own alignment. Measured with this frozen encoder on 120 validation
windows (360 chunks u whose chunk u + 1 is in the window): the nearest neighbour is the
query chunk verbatim for 98% of chunks (33% at stride 4), its continuation starts with
chunk u + 1 at the aligned place for 91%, and 96.6% of chunk u + 1's bytes follow a 4-byte
context that a neighbour holds followed by that byte (76.5% at stride 4, 3.2% with random
entries). Train chunks, whose own documents are filtered out (the paper's rule), are far
less lucky: the nearest neighbour is a verbatim copy for 23% (27% of bytes copyable by the
same measure), 21% of a train batch's chunks have their continuation aligned byte for byte.
Batch 16, 600 steps of AdamW at 2e-3 (40 warm-up steps, cosine); the tiny variant keeps
only 8 train topics (tests).

Measured on 2026-12-07 (2-core x86-64, 1 device, jit, other jobs running: load average
6-15, so the times are upper bounds), validation loss in nats/byte on the near-neighbour
split, all with the same data order, batch and schedule (one seed each):

  step                            100     200     300     400     500     600
  retrieval=False              2.4344  2.3093  2.0920  1.8956  1.7727  1.7476 (acc 0.516)
  retrieval (the default)      2.0698  1.7870  1.4926  1.4039  1.2587  1.2107 (acc 0.690)
  retrieval, bias from 0       2.4324  2.3097  2.1010  (stopped)
  retrieval, no position bias  2.4334  (stopped)

So retrieval lowers the loss by 0.54 nats/byte at step 600 (0.37-0.60 from step 100 on).
The model reads its neighbours: at step 600, giving each validation window another window's
neighbours raises its loss from 1.208 to 1.847 (on the 71% of bytes of chunks 1-3 that
equal the byte at their aligned neighbour position: 0.987 -> 1.862), so copying is learnt
but far from complete (an exact copier would pay ~0 on those bytes): longer runs should
widen the gap.
Wall: 16.5 min without retrieval (load 12-15), 24.7 min with it (load 6-10), of which the
first step's index build (keys of 419,553 chunks, then the 13,112 train chunks' neighbours)
took 3.7 min (about 10 min at load 14); median 0.60 steps/s with retrieval against 0.73
without (each under its own load, so roughly). Without the aligned start the CCA
never began to copy in 300 steps: at step 200 giving each validation window another
window's neighbours changed its loss by 0.0003 nats/byte, although 71% of the bytes of
chunks 1-3 equal the byte at their aligned neighbour position. Previous measurement
(stride 4, 2-block encoder, no CCA bias, 200 steps): 2.3407 with retrieval vs 2.3462.
"""

import os

from configs import recipes
from train import config_lib
from train.datasets import pydoc_retro
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', retrieval=True)
  if a.variant not in ('cpu', 'tiny'):
    raise UserError(f'unknown variant {a.variant!r}; valid: cpu, tiny')
  tiny = a.variant == 'tiny'
  from arch.sequence import retro
  model = dict(retro.TINY) if tiny else dict(
      num_layers=4, num_heads=4, embed_dim=128, max_length=128, chunk_length=32,
      num_neighbours=2, encoder_layers=1, cca_layers=(1, 3), cca_aligned_init=4.0)
  c = recipes.pydoc_lm('sequence.retro', a.variant, '', published={}, cpu=model, tiny=model)
  c.task = 'sequence.retro'
  c.model.retrieval = a.retrieval
  c.data.name = 'pydoc_retro'
  c.task_kwargs.held_out = pydoc_retro.VALIDATION
  c.data.pack = model['max_length'] + 1
  encoder = config_lib.load(os.path.join(os.path.dirname(__file__), 'gpt_pydoc.py')
                            + ':variant=tiny')
  encoder.data.name = 'pydoc_retro'
  if not tiny:  # sized for a 2-core CPU shared with other jobs (measured below)
    c.batch_size = 16
    c.total_steps = 600
    c.warmup_steps = 40
    c.eval_every = 100
    c.ckpt_every = 200
    c.log_every = 10
    c.task_kwargs.database_stride = 1
  else:  # tests: the database and train windows of the first 8 train topics only
    from pydoc_data import topics
    train = sorted(set(topics.topics) - set(pydoc_retro.VALIDATION))
    c.task_kwargs.held_out = pydoc_retro.VALIDATION + tuple(train[8:])
    c.task_kwargs.database_stride = 8  # half a chunk: train chunk c is entry 2c
    encoder.total_steps = 2
    encoder.eval_every = 0
    c.total_steps = 4
    c.eval_every = 4
    c.ckpt_every = 2
    c.log_every = 1
    c.sample.max_new_tokens = 8
  if a.retrieval:
    c.frozen.encoder = dict(spec='configs/gpt_pydoc.py:variant=tiny', workdir='',
                            config=encoder)
  return c
