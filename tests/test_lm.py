"""GPT and the causal-LM objective end to end: published sizes, training through the CLI,
and the sampler (the same text on 1 and 8 devices, tokenizer reuse, bad input)."""

import json
import os

import pytest

from conftest import read_metrics, run_sample, run_train
from train import config_lib, summary

# Hugging Face transformers 4.x: GPT2LMHeadModel(GPT2Config(n_embd, n_layer, n_head)),
# sum(p.numel() for p in model.parameters()) (the LM head is tied to wte, counted once).
HF_GPT2 = {'gpt2': 124_439_808, 'gpt2-medium': 354_823_168, 'gpt2-large': 774_030_080,
           'gpt2-xl': 1_557_611_200}


@pytest.mark.parametrize('variant', sorted(HF_GPT2))
def test_published_sizes_equal_hugging_face(variant):
  import jax
  import numpy as np
  config = config_lib.load(f'configs/gpt_pydoc.py:variant={variant}')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == HF_GPT2[variant]


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('gpt_tiny'))
  proc = run_train(['--config', 'configs/gpt_pydoc.py:variant=tiny', '--workdir', workdir,
                    '--config.total_steps=40', '--config.log_every=10', '--config.eval_every=40',
                    '--config.ckpt_every=40', '--config.lr=3e-3',
                    '--config.warmup_steps=5'], data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_training_lowers_the_loss(trained):
  train = read_metrics(trained, 'train')
  assert train[40]['loss'] < train[10]['loss'] - 0.5
  ev = read_metrics(trained, 'eval')[40]
  assert ev['tokens'] > 10_000 and ev['loss'] < 4.0  # nats/byte; uniform is ln 260 = 5.56


def _sample(workdir, data_dir, devices, *extra):
  return run_sample(['--config', 'configs/gpt_pydoc.py:variant=tiny', '--workdir', workdir,
                     '--prompt', 'The ', '--num_samples', '3', '--max_new_tokens', '24',
                     '--seed', '7', *extra], data_dir, devices=devices)


def test_sampler_same_text_on_1_and_8_devices(trained, data_dir):
  one = _sample(trained, data_dir, 1)
  assert one.returncode == 0, one.stderr[-3000:]
  eight = _sample(trained, data_dir, 8)
  assert eight.returncode == 0, eight.stderr[-3000:]
  assert one.stdout == eight.stdout
  assert one.stdout.count('--- sample') == 3
  # An LM continues its prompt: each sample's text is the prompt, then the completion.
  for body in one.stdout.split('--- sample')[1:]:
    text = body.split('---\n', 1)[1]
    assert text.startswith('The ') and '\n=> ' not in text, text
  with open(os.path.join(trained, 'samples', 'step40_seed7.txt')) as f:
    assert f.read().strip() == one.stdout.strip()
  # Another seed, other text; greedy rows are all the same.
  other = _sample(trained, data_dir, 1, '--seed', '8')
  assert other.stdout != one.stdout
  greedy = _sample(trained, data_dir, 1, '--temperature', '0')
  bodies = greedy.stdout.split('--- sample')[1:]
  assert len(set(b.split('---', 1)[-1] for b in bodies)) == 1


@pytest.mark.parametrize('args,message', [
    (['--top_p', '0'], 'top_p must be in (0, 1]'),
    (['--top_k', '5', '--steps', '3'], '--steps: this task\'s sampler takes no steps; its '
                                       'options: --max_new_tokens, --temperature'),
    (['--num_samples', '0'], '--num_samples must be >= 1'),
    (['--step', '3'], 'no checkpoint at step 3'),
])
def test_sampler_bad_input(trained, data_dir, args, message):
  proc = _sample(trained, data_dir, 1, *args)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(f'error: {message}')


def test_sampler_without_checkpoint(data_dir, tmp_path):
  proc = _sample(str(tmp_path), data_dir, 1)
  assert proc.returncode == 2 and 'no checkpoints in' in proc.stderr


def test_bpe_tokenizer_is_trained_saved_and_reused(data_dir, tmp_path):
  workdir = str(tmp_path / 'bpe')
  args = ['--config', 'configs/gpt_pydoc.py:variant=tiny,tokenizer=bpe', '--workdir', workdir]
  proc = run_train(args + ['--config.total_steps=2', '--config.eval_every=2',
                           '--config.data.vocab_size=400'], data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  path = os.path.join(workdir, 'tokenizer.json')
  with open(path) as f:
    assert len(json.load(f)['model']['vocab']) == 400
  before = os.path.getmtime(path)
  proc = run_sample(args + ['--prompt', 'The import', '--num_samples', '1', '--max_new_tokens',
                            '5', '--config.data.vocab_size=400'], data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('The import') == 1
  assert os.path.getmtime(path) == before  # reused, not retrained
