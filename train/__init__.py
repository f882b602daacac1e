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
#
# XLA:CPU aborts the process when a collective's participants do not all arrive within 40 s.
# Simulated devices are threads of one process; on a loaded 2-core machine a pmap step of 8
# of them (BatchNorm statistics averaged over devices) missed that deadline (2026-12): the
# deadline is 10 minutes here, unless the user's XLA_FLAGS set it.
for _flag, _value in (('--xla_cpu_enable_concurrency_optimized_scheduler', 'false'),
                      ('--xla_cpu_collective_call_terminate_timeout_seconds', '600')):
  if _flag not in _os.environ.get('XLA_FLAGS', ''):
    _os.environ['XLA_FLAGS'] = f'{_os.environ.get("XLA_FLAGS", "")} {_flag}={_value}'.strip()
