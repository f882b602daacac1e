"""Config of the contract test tasks (tests/contract_tasks.py): `:kind=epochs|no_input|graphs`."""

from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, kind='epochs')
  c = config_lib.base()
  c.task = 'contract_tasks'
  c.task_kwargs = dict(kind=a.kind)
  c.model_name = ''  # the task builds its own network
  c.data.name = '' if a.kind == 'no_input' else 'digits'
  c.data.eval_split = 'test'
  c.batch_size = 16
  c.eval_batch_size = 64
  c.total_steps = 4
  c.log_every = 1
  c.eval_every = 4
  c.ckpt_every = 2
  c.optax_name = 'adam'
  c.lr = 1e-2
  c.schedule = 'constant'
  return c
