"""Inductive node classification on stochastic block model graphs (the offline `sbm`
dataset: 3,000 nodes, 5 communities, noisy community-correlated features) with GraphSAGE
(Hamilton et al. 2017) trained on minibatches of target nodes with sampled neighbourhoods.

  python -m train --config configs/sage_sbm.py --workdir runs/sage_sbm

Arguments: `aggregator=mean|pool|lstm`; `tiny` for tests.
The paper's supervised minibatch recipe at a smaller width: K = 2 layers of 64 (the paper:
256), neighbour samples S_1 = 25, S_2 = 10 (a target's tree: 10 neighbours, each with 25
of its own), 512 targets a step (256 from each of 2 train graphs), Adam at 0.01 with a
cosine decay, no dropout. Evaluation runs the network on the whole test graphs (every
neighbour, no sampling): `accuracy` over their 6,000 nodes. For scale (see
train/datasets/sbm.py): a node's own features classified by the nearest true class mean
give 0.476, the mean of its own and its neighbours' features 0.677.

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit, seed 0) while other jobs loaded
both cores (load average 8.2-11.3), so the time is an upper bound:

  python -m train --config configs/sage_sbm.py      accuracy 0.747 (test, 6,000 nodes)
                                                    358 s wall, ~0.9 steps/s

(train accuracy on the sampled trees at the last step: 0.674). The network runs on every
row of the trees (133,632 a step), though only the roots' last-layer outputs are read:
the cost of reusing the whole-graph GraphSAGE unchanged. Only the mean aggregator was
trained here; `pool` and `lstm` were only checked to give a finite loss on small graphs.
"""

from train import config_lib
from train.datasets import sbm
from train.errors import UserError

AGGREGATORS = ('mean', 'pool', 'lstm')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, aggregator='mean', tiny=False)
  if a.aggregator not in AGGREGATORS:
    raise UserError(f'unknown aggregator {a.aggregator!r}; valid: {", ".join(AGGREGATORS)}')
  c = config_lib.base()
  c.task = 'graph.node_classification'
  c.task_kwargs = dict(num_classes=sbm.NUM_CLASSES, node_features=sbm.NUM_FEATURES,
                       max_nodes=sbm.NUM_NODES, max_edges=sbm.MAX_EDGES,
                       batch_nodes=8 if a.tiny else 256, fanouts=(3, 2) if a.tiny else (25, 10))
  c.data.name = 'sbm'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.batch_size = 2                # graphs a step
  c.eval_batch_size = 2           # the two test graphs
  c.model_name = 'graph.sage'
  c.model = dict(hidden=(4, 4) if a.tiny else (64, 64), aggregator=a.aggregator,
                 sample_sizes=(), max_degree=25, dropout=0.0)

  c.total_steps = 4 if a.tiny else 300
  c.log_every = 1 if a.tiny else 50
  c.eval_every = c.total_steps
  c.ckpt_every = 2 if a.tiny else 300
  c.optax_name = 'adam'
  c.lr = 0.01
  c.schedule = 'cosine'
  return c
