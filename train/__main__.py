"""`python -m train --config configs/NAME.py[:arg] --workdir DIR [--config.key=value ...]`.

Bad input (unknown config key, model, task, optimizer or dataset; a batch that does not
split over the devices; a checkpoint that cannot be restored) prints one line naming the
problem and the valid choices and exits with status 2; existing checkpoints are kept.
"""

import argparse
import os
import sys


def parse(argv):
  from train import config_lib
  overrides, rest = config_lib.split_overrides(argv)
  parser = argparse.ArgumentParser(
      prog='python -m train', description='Train an archzoo experiment config.',
      epilog='Override any config field with --config.KEY=VALUE (e.g. --config.total_steps=100).')
  parser.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...]')
  parser.add_argument('--workdir', required=True, help='checkpoints, metrics.jsonl, config.json')
  args = parser.parse_args(rest)
  config = config_lib.load(args.config)
  for key, value in overrides:
    config_lib.override(config, key, value)
  return config, args.workdir


def main(argv=None):
  from arch.task import ConfigError
  from train import loop
  from train import peers
  from train.errors import UserError
  # peers.finish() tells the other processes to stop expecting this one's heartbeat: on a
  # clean end only. An unexpected error (e.g. a collective that failed because a peer died)
  # leaves the watcher running, so if a peer is gone it still stops this process with its
  # one line instead of leaving it in jax's exit-time shutdown, which waits for that peer.
  try:
    argv = sys.argv[1:] if argv is None else argv
    config, workdir = parse(argv)
    if peers.needs_supervisor(config):  # a multi-process run: see train/peers.py
      return peers.supervise(config, os.path.abspath(workdir), argv)
    loop.train_and_evaluate(config, os.path.abspath(workdir))
  except (UserError, ConfigError) as e:  # ConfigError: a task's, e.g. from its preprocess
    peers.finish()
    print(f'error: {e}', file=sys.stderr)
    return 2
  except loop.Preempted as e:
    peers.finish()
    print(str(e), file=sys.stderr)
    return e.exit_code
  peers.finish()
  return 0


if __name__ == '__main__':
  sys.exit(main())
