"""`python -m train.summary`: the parameter table from eval_shape, no allocation, no data."""


from train import summary
from conftest import run_cli


def test_summary_prints_the_table_and_total(capsys):
  assert summary.main(['--config', 'configs/lenet_digits.py:head=rbf']) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == 'total_params=60000'
  rows = {line.split()[0]: line.split()[1] for line in out[1:-1]}
  assert rows['C3'] == '1,516' and rows['C5'] == '48,120' and rows['F6'] == '10,164'


def test_summary_of_a_model_too_big_for_memory(capsys):
  # 10^5 x 10^5 hidden layers: 10^10 floats (40 GB) would not fit; eval_shape needs none.
  assert summary.main(['--config', 'configs/mlp_digits.py', '--config.model.hidden',
                       '(100000, 100000)']) == 0
  total = int(capsys.readouterr().out.strip().splitlines()[-1].split('=')[1])
  assert total == 64 * 100000 + 100000 + 100000 ** 2 + 100000 + 100000 * 10 + 10


def test_summary_cli_needs_no_data(tmp_path):
  proc = run_cli(['--config', 'configs/lenet_digits.py'], tmp_path / 'empty', module='train.summary')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().splitlines()[-1] == 'total_params=60850'
  assert not (tmp_path / 'empty').exists()


def test_summary_bad_model_name_is_one_line(capsys):
  assert summary.main(['--config', 'configs/mlp_digits.py', '--config.model_name=vision.nope']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'vision.lenet' in err[0]


def test_summary_memory_plan_on_one_device(capsys):
  # mlp_digits width 32, depth 1: 2,410 float32 params (9,640 bytes), Adam's two moments
  # twice that plus its step count; all whole on the one device
  assert summary.main(['--config', 'configs/mlp_digits.py:width=32,depth=1', '--memory']) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == 'total_params=2410'
  start = next(i for i, l in enumerate(out) if l.startswith('memory plan on mesh'))
  rows = {l.split()[0]: l.split() for l in out[start + 1:-1]}
  assert sorted(rows) == ['optimizer', 'params', 'state']
  assert rows['params'][1:3] == ['0.01', 'MiB'] and rows['optimizer'][2:4] == ['0.02', 'MiB']
  assert rows['state'][2:4] == ['0.03', 'MiB'] and '(replicated: 0.03 MiB)' in out[-2]
