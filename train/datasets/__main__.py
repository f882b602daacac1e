"""`python -m train.datasets NAME [--data_dir DIR]`: prepares an offline dataset."""

import argparse
import sys

from train import data
from train.errors import UserError


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m train.datasets')
  parser.add_argument('name', help='dataset name (offline: ' + ', '.join(data.offline_names()) + ')')
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args(argv)
  try:
    builder = data.builder(args.name, args.data_dir, prepare=True)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{args.name} prepared in {builder.data_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
