"""Node classification on Zachary's karate club (the offline `karate` dataset): GCN (Kipf &
Welling 2017), GAT (Veličković et al. 2018) or GraphSAGE (Hamilton et al. 2017).

  python -m train --config configs/gnn_karate.py:model=gcn --workdir runs/gnn_karate_gcn

Arguments: `model=gcn|gat|sage`; `aggregator=mean|pool|lstm` for sage; `tiny` for tests.
Semi-supervised as in the GCN paper's karate experiment: one-hot node features, one
labelled member per club (the two leaders, nodes 0 and 33), test accuracy over the other
32 members; full-batch training (batch 1 graph), Adam. GCN: the paper's Cora recipe (16
hidden, dropout 0.5, lr 0.01, 200 steps) with its L2 5e-4 on all weights (the paper's on
the first layer). GAT: its Cora recipe (8 heads x 8 hidden, 1 output head, dropout 0.6,
lr 0.005, L2 5e-4). GraphSAGE: two layers of 16, whole neighbourhoods, dropout 0.5, lr 0.01.

Test accuracy (32 members) at the last step, mean ± (population) std over
`--config.seed=0..9` (the seed moves only the initialisation, dropout and sampling; the
split is fixed), 200 steps each;
measured on a 2-core x86-64 CPU (2026-12, 1 device, jit) while other jobs loaded both cores
(load average 5-8), so the times are upper bounds: one run's wall time through
`python -m train`, mostly start-up and compilation (GCN's steps ran at ~700/s).

  model=gcn                    0.959 ± 0.014   (0.9375-0.96875)   10.5 s
  model=gat                    0.897 ± 0.074   (0.71875-1.0)      14.3 s
  model=sage (mean)            0.909 ± 0.029   (0.84375-0.9375)   14.1 s
  model=sage,aggregator=pool   0.675 ± 0.167   (0.28125-0.9375)   16.6 s
  model=sage,aggregator=lstm   0.859 ± 0.128   (0.53125-0.96875)  20.7 s

Two labelled nodes make every model's result depend on its initialisation: GAT's and the
SAGE pool and LSTM aggregators' spreads are wide.
"""

from train import config_lib
from train.errors import UserError

MODELS = {
    'gcn': dict(model=dict(hidden=(16,), dropout=0.5), lr=0.01, weight_decay=5e-4),
    'gat': dict(model=dict(hidden=(8,), heads=8, out_heads=1, dropout=0.6), lr=0.005,
                weight_decay=5e-4),
    'sage': dict(model=dict(hidden=(16, 16), dropout=0.5, sample_sizes=()), lr=0.01,
                 weight_decay=5e-4),
}
TINY = {'gcn': dict(hidden=(4,)), 'gat': dict(hidden=(4,), heads=2),
        'sage': dict(hidden=(4, 4), max_degree=20)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='gcn', aggregator='mean', tiny=False)
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  if a.aggregator != 'mean' and a.model != 'sage':
    raise UserError(f'aggregator={a.aggregator} is an argument of model=sage only')
  recipe = MODELS[a.model]
  c = config_lib.base()
  c.task = 'graph.node_classification'
  c.task_kwargs = dict(num_classes=2, node_features=34, max_nodes=34, max_edges=156)
  c.data.name = 'karate'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.batch_size = 1  # graphs: the whole graph every step
  c.model_name = f'graph.{a.model}'
  c.model = dict(recipe['model'], **(TINY[a.model] if a.tiny else {}))
  if a.model == 'sage':
    c.model.aggregator = a.aggregator

  c.total_steps = 4 if a.tiny else 200
  c.log_every = 1 if a.tiny else 50
  c.eval_every = c.total_steps
  c.ckpt_every = 2 if a.tiny else 200
  c.optax_name = 'adam'
  c.lr = recipe['lr']
  c.schedule = 'constant'
  c.weight_decay = recipe['weight_decay']
  return c
