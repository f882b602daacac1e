"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020) on the offline digits split
over simulated clients, IID or label-skewed (arch/federated/fedavg.py). One loop step is one
communication round.

  python -m train --config configs/fedavg_digits.py:algorithm=fedavg,alpha=0.1 --workdir runs/fedavg

Arguments: `algorithm=fedavg|fedprox|central`, `alpha=A` (Dirichlet label skew; `iid` or 0:
IID), `mu` (FedProx's proximal weight, default 0.01), `model=mlp|lenet`, `tiny` for tests.
The recipe is McMahan et al.'s MNIST setup scaled to the 1,432 train digits: M = 100
clients, K = 10 sampled per round (C = 0.1), E = 5 local epochs of SGD with batch B = 10
at 0.05, server step 1 (plain averaging), their "2NN" (two hidden layers of 200, ReLU) on the
flattened 8x8 images; 300 rounds, the test split evaluated every 25.

`algorithm=central` is the centralised baseline through the same code: ONE client holding
the whole split, sampled every round, so a round is E' epochs of plain minibatch SGD (batch
10, step 0.05; tests/test_fedavg.py checks the one-client case equals SGD). It is matched
to the federated runs in examples and gradient steps: a federated round trains E = 5 epochs
on K / M = 10% of the data (about 716 examples, 72 steps of B = 10 at most), so 300 rounds
are 150 epochs of the split; the central run does E' = 1 epoch (144 steps of 10) per round
for 150 rounds, evaluated every 12.5 -> 13 rounds (the same examples seen at each eval to 4%).

The train split is the first 1,432 of the 1,437 train digits, so that it divides over 8
devices; every round's batch is all of it, in a fixed order (the step picks the clients'
examples; see the task's docstring).

Measured on a 2-core x86-64 CPU, 2026-12-06 (1 device, jit, seed 0) while other agents'
jobs loaded both cores (load average 4-13, so the times are upper bounds). Test accuracy of
the global model against communication rounds (the 360 test digits):

  run (config argument)                   r25   r50   r100  r150  r200  r300  wall (load)
  algorithm=fedavg,alpha=iid              .875  .953  .956  .969  .975  .978  105 s (4.4-8.5)
  algorithm=fedavg,alpha=0.1              .911  .914  .931  .983  .981  .978  171 s (8.5-11.7)
  algorithm=fedavg,alpha=0.01             .083  .406  .844  .850  .872  .925  145 s (11.7-12.5)
  algorithm=fedprox,alpha=iid (mu 0.01)   .875  .953  .956  .969  .975  .978  209 s (11.4-13.5)
  algorithm=fedprox,alpha=0.1 (mu 0.01)   .911  .914  .931  .983  .981  .978  173 s (11.7-10.7)
  algorithm=fedprox,alpha=0.1,mu=0.1      .908  .914  .931  .978  .978  .975  136 s (12.6-15.3)
  algorithm=fedprox,alpha=0.01,mu=0.1     .081  .339  .800  .833  .853  .914  149 s (12.5-12.6)
  algorithm=central (same examples)       .961  .969  .978  .981  .981  .983  108 s (10.7-11.4)

(central's evals at its rounds 13, 26, 52, 78, 104, 150, i.e. 26, 52, 104, 156, 208, 300
federated rounds' worth of examples.) First eval at >= 95%: round 50 IID, 125 at alpha 0.1
(then dips to 0.942 at 175 and 0.961 at 250), never at alpha 0.01 (best 0.925, round 300);
centralised 13 (26 rounds' examples). The seed-0 partitions: IID 14-15 examples and 7.8
classes a client; alpha 0.1: 3 of 100 clients empty, the others 10 examples (median, at most
91) of 2.8 classes on average; alpha 0.01: 56 empty, the others 1.2 classes (at most 152
examples). At alpha 0.01 the first rounds' average is worse than chance (0.083 at round 25:
the clients drift to their own one or two classes). FedProx's proximal term did not help
here: mu 0.01 moved the test accuracy by < 0.001, mu 0.1 lowered it slightly (alpha 0.1:
0.975 against 0.978 at round 300; alpha 0.01: 0.914 against 0.925). Examples are matched in
expectation (a round trains E = 5 epochs of K / M = 10% of the split: 300 x 5 x 143.2 =
214,800 against central's 150 x 1,432); steps are not: a 14-example IID client takes 2 local
steps (10 and 4 examples), so the IID run took 30,000 client steps to central's 21,600.
"""

from train import config_lib
from train.errors import UserError

TRAIN_EXAMPLES = 1432  # of the digits' 1,437 train images: a multiple of 8 devices
ROUNDS = 300


def get_config(arg=None):
  a = config_lib.parse_arg(arg, algorithm='fedavg', alpha='iid', mu=0.01, model='mlp',
                           tiny=False)
  c = config_lib.base()
  c.task = 'federated.fedavg'
  alpha = 0.0 if a.alpha == 'iid' else float(a.alpha)
  central = a.algorithm == 'central'
  c.task_kwargs = dict(
      algorithm='fedavg' if central else a.algorithm,
      num_clients=1 if central else 100, clients_per_round=1 if central else 10,
      alpha=0.0 if central else alpha, local_epochs=1 if central else 5, local_batch_size=10,
      client_lr=0.05, prox_mu=a.mu if a.algorithm == 'fedprox' else 0.0, dp_clip=0.0,
      dp_noise=0.0, input_size=(8, 8), channels=1, num_classes=10)
  if a.model == 'mlp':
    c.model_name = 'vision.mlp'
    c.model = dict(hidden=(16,) if a.tiny else (200, 200))
  elif a.model == 'lenet':
    c.model_name = 'vision.lenet'
    c.model = dict(c5=8, f6=12) if a.tiny else {}
    c.task_kwargs.input_size = (32, 32)
  else:
    raise UserError(f'unknown model {a.model!r}; valid: mlp, lenet')
  c.data.name = 'digits'
  c.data.train_split = f'train[:{TRAIN_EXAMPLES}]'
  c.data.eval_split = 'test'
  c.data.shuffle = False  # the step partitions the split by position and label
  c.batch_size = TRAIN_EXAMPLES
  c.eval_batch_size = 360  # the test split, one batch
  c.total_steps = ROUNDS // 2 if central else ROUNDS
  c.log_every = 5
  c.eval_every = 13 if central else 25
  c.ckpt_every = 50
  if a.tiny:
    k = c.task_kwargs
    k.num_clients, k.clients_per_round, k.local_epochs, k.local_batch_size = 8, 3, 1, 16
    c.total_steps, c.log_every, c.eval_every, c.ckpt_every = 4, 1, 4, 2

  c.optax_name = 'sgd'  # the server: w + delta (FedAvg); e.g. adam for FedAdam
  c.lr = 1.0
  c.schedule = 'constant'
  return c
