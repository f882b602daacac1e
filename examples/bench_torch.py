"""`python -m examples.bench_torch [--models gpt,gpt_dropout,gpt2_small,resnet18,resnet50,...]
[--steps N] [--rounds R] [--torch_compile]`

The training step of the same model, batch and optimizer in archzoo (the loop's jitted
step, `train.bench`) and in PyTorch eager (and `torch.compile` with --torch_compile), back
to back on this machine, as a ratio. A benchmark, not a test. PyTorch is not a dependency
of archzoo: without it the script says so and times archzoo alone.

Models (each checks that both sides hold the same number of parameters):
  gpt          configs/gpt_pydoc.py (4 layers, width 256, 128 bytes of context, batch 32,
               AdamW b2 0.99, weight decay 0.1, gradients clipped at 1), dropout off
  gpt_dropout  the same with the config's dropout 0.1 (embeddings, residuals, attention)
  gpt2_small   GPT-2 small's shape: 12 layers, width 768, 12 heads, 256 bytes, batch 8
  resnet18     configs/resnet_imagenet.py:variant=18 at 224x224, batch 8, SGD momentum 0.9
  resnet50     the same, variant 50 (L2 weight decay 1e-4 on the gradient, as the config)
  resnet18_64  ResNet-18 at 64x64, batch 32 (its last stage runs on 2x2 maps)
The PyTorch GPT is written here in GPT-2's layout (tied head, GELU-tanh MLPs, fused SDPA);
the ResNets are torchvision's (same v1.5 layout and count). Data: random tokens or images,
the same for every step (the input pipeline is not timed on either side).

Each round times archzoo then PyTorch for every model; a model's figure is its median over
rounds. Prints a table and a JSON line.
"""

import argparse
import json
import statistics
import sys
import time

GPT = 'configs/gpt_pydoc.py'
MODELS = {
    'gpt': (GPT, {'model.dropout_rate': 0.0}),
    'gpt_dropout': (GPT, {}),
    'gpt2_small': (GPT, {'model.num_layers': 12, 'model.embed_dim': 768, 'model.num_heads': 12,
                         'model.max_length': 256, 'model.dropout_rate': 0.0,
                         'data.pack': 257, 'batch_size': 8}),
    'resnet18': ('configs/resnet_imagenet.py:variant=18', {'batch_size': 8}),
    'resnet50': ('configs/resnet_imagenet.py:variant=50', {'batch_size': 8}),
    'resnet18_64': ('configs/resnet_imagenet.py:variant=18',
                    {'batch_size': 32, 'task_kwargs.input_size': (64, 64),
                     'task_kwargs.host_size': 64}),
}


def archzoo_config(name):
  from train import config_lib
  spec, overrides = MODELS[name]
  config = config_lib.load(spec)
  for key, value in overrides.items():
    config_lib.override(config, key, str(value))
  return config


def archzoo_params(config):
  import jax
  import numpy as np
  from train import core
  task = core.load_task(config)
  batch = {k: np.zeros(v.shape, v.dtype) for k, v in task.example_batch(1).items()}
  shapes = jax.eval_shape(lambda: task.init(jax.random.key(0), batch))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.get('params', shapes)))


# ------------------------------------------------------------------------------- PyTorch

def torch_gpt(config):
  """GPT-2's layout in PyTorch at the config's sizes: (module, batch maker, loss fn)."""
  import torch
  from torch import nn
  from torch.nn import functional as F
  m = config.model
  vocab, d, heads, layers = int(m.vocab_size), int(m.embed_dim), int(m.num_heads), int(m.num_layers)
  length, p = int(m.max_length), float(m.get('dropout_rate', 0.0))

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
      self.drop = nn.Dropout(p)

    def forward(self, x):
      b, t, _ = x.shape
      q, k, v = (a.view(b, t, heads, d // heads).transpose(1, 2)
                 for a in self.qkv(self.ln1(x)).split(d, dim=-1))
      y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                         dropout_p=p if self.training else 0.0)
      x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
      return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate='tanh')))

  class Gpt(nn.Module):
    def __init__(self):
      super().__init__()
      self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(length, d)
      self.drop = nn.Dropout(p)
      self.blocks = nn.ModuleList(Block() for _ in range(layers))
      self.ln = nn.LayerNorm(d)

    def forward(self, tokens):
      x = self.drop(self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1])))
      for block in self.blocks:
        x = block(x)
      return self.ln(x) @ self.wte.weight.T  # the head tied to the token embedding

  def batch():
    tokens = torch.randint(0, vocab, (int(config.batch_size), length + 1))
    return tokens[:, :-1], tokens[:, 1:]

  def loss(model, inputs, targets):
    return F.cross_entropy(model(inputs).reshape(-1, vocab), targets.reshape(-1))

  return Gpt(), batch, loss


def torch_resnet(config):
  import torch
  import torchvision
  from torch.nn import functional as F
  depth = {('basic', 8): 18, ('basic', 16): 34, ('bottleneck', 16): 50,
           ('bottleneck', 33): 101, ('bottleneck', 50): 152}[
               config.model.block, sum(config.model.stage_sizes)]
  model = getattr(torchvision.models, f'resnet{depth}')(num_classes=1000)
  size = tuple(config.task_kwargs.input_size)
  smoothing = float(config.task_kwargs.get('label_smoothing', 0.0) or 0.0)

  def batch():
    return (torch.randn(int(config.batch_size), 3, *size),
            torch.randint(0, 1000, (int(config.batch_size),)))

  def loss(model, images, labels):
    return F.cross_entropy(model(images), labels, label_smoothing=smoothing)

  return model, batch, loss


def torch_optimizer(config, params):
  """The config's optimizer in PyTorch (AdamW with decoupled decay, or SGD with momentum
  and the config's L2 decay on the gradient)."""
  import torch
  lr = float(config.get('lr', 1e-3))
  kw = dict(config.optax)
  if config.optax_name == 'adamw':
    return torch.optim.AdamW(params, lr=lr, betas=(kw.get('b1', 0.9), kw.get('b2', 0.999)),
                             eps=kw.get('eps', 1e-8), weight_decay=kw.get('weight_decay', 1e-4))
  if config.optax_name == 'sgd':
    return torch.optim.SGD(params, lr=lr, momentum=kw.get('momentum') or 0.0,
                           nesterov=bool(kw.get('nesterov')),
                           weight_decay=float(config.get('weight_decay') or 0.0))
  raise ValueError(f'no PyTorch twin for optax.{config.optax_name}')


def bench_torch(name, config, steps, compile_model=False):
  """{'step_ms', 'examples_per_sec', 'params'} of PyTorch's training step."""
  import torch
  make = torch_gpt if name.startswith('gpt') else torch_resnet
  model, batch, loss_fn = make(config)
  model.train()
  params = sum(p.numel() for p in model.parameters())
  opt = torch_optimizer(config, model.parameters())
  clip = float(config.get('grad_clip_norm') or 0.0)
  fn = torch.compile(loss_fn) if compile_model else loss_fn
  inputs = batch()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = fn(model, *inputs)
    loss.backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss

  for _ in range(2):  # warm-up (and compile)
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sec = (time.perf_counter() - start) / steps
  return dict(step_ms=1e3 * sec, examples_per_sec=config.batch_size / sec, params=params)


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m examples.bench_torch')
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--steps', type=int, default=10, help='timed steps per round and side')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--torch_compile', action='store_true', help='time torch.compile too')
  args = p.parse_args(argv)
  names = args.models.split(',')
  unknown = sorted(set(names) - set(MODELS))
  if unknown:
    print(f'error: unknown models {unknown}; valid: {", ".join(MODELS)}', file=sys.stderr)
    return 2
  try:
    import torch
  except ImportError:
    torch = None
    print('PyTorch is not installed in this environment (pip install torch torchvision): '
          'timing archzoo alone.')
  from train.bench import bench_training
  configs = {n: archzoo_config(n) for n in names}
  sides = ['archzoo'] + (['pytorch'] if torch else []) + (
      ['torch.compile'] if torch and args.torch_compile else [])
  times = {(n, s): [] for n in names for s in sides}
  counts = {}
  for r in range(args.rounds):
    for n in names:
      config = configs[n]
      out = bench_training(config, args.steps, synthetic=True)
      times[n, 'archzoo'].append(out['step_ms'])
      if torch:
        got = bench_torch(n, config, args.steps)
        times[n, 'pytorch'].append(got['step_ms'])
        counts[n] = (archzoo_params(config), got['params'])
        if counts[n][0] != counts[n][1]:
          print(f'error: {n}: archzoo has {counts[n][0]:,} parameters, the PyTorch twin '
                f'{counts[n][1]:,}', file=sys.stderr)
          return 1
        if args.torch_compile:
          times[n, 'torch.compile'].append(bench_torch(n, config, args.steps, True)['step_ms'])
      print(f'round {r + 1}: {n} ' + ', '.join(f'{s} {times[n, s][-1]:.1f} ms' for s in sides),
            flush=True)
  unit = lambda n: ('tokens' if n.startswith('gpt') else 'images')
  per = lambda n: (configs[n].batch_size * (configs[n].model.max_length
                                            if n.startswith('gpt') else 1))
  result = {}
  print(f'\nthreads: torch {torch.get_num_threads() if torch else "-"}; '
        f'median of {args.rounds} rounds x {args.steps} steps')
  print('| model | ' + ' | '.join(f'{s} {"/s"}' for s in sides) + ' | ratio (archzoo / pytorch) |')
  print('|---' * (len(sides) + 2) + '|')
  for n in names:
    med = {s: statistics.median(times[n, s]) for s in sides}
    rate = {s: per(n) / (med[s] / 1e3) for s in sides}
    ratio = rate['archzoo'] / rate['pytorch'] if torch else None
    result[n] = dict(step_ms=med, per_sec=rate, unit=unit(n), ratio=ratio,
                     params=counts.get(n, (None,))[0])
    cells = ' | '.join(f'{rate[s]:,.1f} {unit(n)}' for s in sides)
    print(f'| {n} | {cells} | {"%.2fx" % ratio if ratio else "-"} |')
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
