"""`python -m examples.bench_decoding [--config configs/gpt_pydoc.py] [--lengths 64,256,1024]`

A benchmark of a causal-LM config (any network with the LM contract: tokens -> logits,
`decode=True` with a cache), not a test:

  decoding: per-token latency of one new token after a context of L tokens, with the
      cache (one cached step) and without (a full forward over L + 1 tokens), batch 1.
      Cached latency should stay near flat in L; uncached grows with L.
  training: the loop's jitted train step (`train.bench`): tokens/s and MFU.

Weights are random (latency does not depend on them). Prints a table and a JSON line.
It lives here, beside the research code, because it knows a language model's call
signature; `train.bench` times the training step of any config.
"""

import argparse
import json
import sys
import time


def _time(fn, reps):
  fn()  # compile / warm up
  start = time.perf_counter()
  for _ in range(reps):
    out = fn()
  import jax
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / reps


def bench_decoding(config, lengths, steps, reps):
  import jax
  import jax.numpy as jnp
  import arch
  longest = max(lengths) + steps
  overrides = {}
  if 'max_length' in arch.model_fields(config.model_name):
    overrides['max_length'] = max(int(config.model.get('max_length', 0)), longest)
  model = arch.model_from_config(config, **overrides)
  vocab = int(config.model.get('vocab_size', 256))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  rows = []
  for length in lengths:
    tokens = jax.random.randint(jax.random.key(length), (1, length + steps), 4, vocab)
    cache = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros(
        (1, length + steps), jnp.int32), decode=True)['cache'])()

    @jax.jit
    def step(cache, tok):
      logits, mutated = model.apply({'params': params, 'cache': cache}, tok, decode=True,
                                    mutable=['cache'])
      return logits[:, -1], mutated['cache']

    _, cache = step(cache, tokens[:, :length])  # prefill the context

    def cached():
      c, out = cache, None
      for i in range(steps):
        out, c = step(c, tokens[:, length + i:length + i + 1])
      return out

    full = jax.jit(lambda t: model.apply({'params': params}, t)[:, -1])
    window = tokens[:, :length + 1]
    rows.append(dict(context=length,
                     cached_ms=1e3 * _time(cached, reps) / steps,
                     uncached_ms=1e3 * _time(lambda: full(window), reps * 4)))
  return rows


def main(argv=None):
  from train import bench, config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='python -m examples.bench_decoding')
  p.add_argument('--config', default='configs/gpt_pydoc.py')
  p.add_argument('--lengths', default='64,256,1024', help='decoding context lengths')
  p.add_argument('--decode_steps', type=int, default=16)
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--train_steps', type=int, default=10)
  args = p.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    lengths = [int(x) for x in args.lengths.split(',')]
    decoding = bench_decoding(config, lengths, args.decode_steps, args.reps)
    training = bench.bench_training(config, args.train_steps)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  tokens = training['examples_per_sec'] * int(config.data.pack or 0)
  print(f'decoding, batch 1 ({args.config}): ms per new token')
  print(f'{"context":>8} {"cached":>10} {"uncached":>10}')
  for r in decoding:
    print(f'{r["context"]:>8} {r["cached_ms"]:>10.2f} {r["uncached_ms"]:>10.2f}')
  print(f'training: {tokens:,.0f} tokens/s, {training["step_ms"]:.0f} ms per step, '
        f'MFU {training["mfu"] or 0:.3f}')
  print(json.dumps({'decoding': decoding, 'training': dict(training, tokens_per_sec=tokens)}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
