"""The machinery every family shares: the loop, data, checkpoints, metrics, the CLI.

Knows no architecture by name: it resolves `config.task` and `config.model_name` with
importlib through `arch.load`. In layers, without import cycles (tests/test_imports.py):
errors, config_lib, mesh, checkpoint, text, data at the bottom; core (state, tasks,
optimizers, restore, run_batch) on them; steps (step builders) and runner (jit or pmap)
on core; evaluators, loop, sample, summary and bench on top.
"""

import os as _os

# XLA:CPU's concurrency-optimized scheduler can deadlock a program that runs independent
# while loops side by side: the train step of a bidirectional scanned LSTM
# (configs/lstm_segment_pydoc.py) parked every thread with no CPU use (jax 0.10.2), and ran
# normally with the scheduler off. Off unless the user's XLA_FLAGS set it.
_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler'
if _FLAG not in _os.environ.get('XLA_FLAGS', ''):
  _os.environ['XLA_FLAGS'] = f'{_os.environ.get("XLA_FLAGS", "")} {_FLAG}=false'.strip()
