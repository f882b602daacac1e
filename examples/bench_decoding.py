"""`python -m examples.bench_decoding [--config configs/gpt_pydoc.py] [--lengths 64,256,1024]
[--decode_steps N] [--reps R] [--train_steps N] [--torch [--torch_threads T]]`

A benchmark of a causal-LM config (any network with the LM contract: tokens -> logits,
`decode=True` with a cache), not a test:

  decoding: per-token latency of new tokens after a context of L tokens, batch 1:
      step      the cached step jitted alone, one dispatch per token, its cache donated
                (updated in place);
      loop      the sampler's way: `arch.sequence.decoding.generate` (greedy), every token
                inside one compiled `lax.while_loop` (the prefilled cache is copied into
                the loop once per call, counted);
      uncached  a full forward over L + 1 tokens;
      pytorch   with --torch, where PyTorch and transformers are installed: Hugging Face's
                GPT2LMHeadModel of the same shape (random weights, same parameter count),
                one token at a time with its KV cache (`past_key_values`), eager.
      Cached latency should stay near flat in L; uncached grows with L.
  training: the loop's jitted train step (`train.bench`): tokens/s and MFU (0 steps: off).

Weights are random (latency does not depend on them). Each figure is the median of R
timed repetitions of N new tokens. Prints a table and a JSON line. It lives here, beside the
research code, because it knows a language model's call signature; `train.bench` times
the training step of any config.
"""

import argparse
import json
import statistics
import sys
import time


def _median_ms(run, reps, per):
  """Median over `reps` of run(): a (prepare, timed) pair; milliseconds / `per`."""
  import jax
  times = []
  for _ in range(reps + 1):  # the first compiles / warms up
    timed = run()
    start = time.perf_counter()
    jax.block_until_ready(timed())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times[1:]) / per


def bench_decoding(config, lengths, steps, reps):
  import jax
  import jax.numpy as jnp
  import arch
  from arch.sequence import decoding
  longest = max(lengths) + steps
  overrides = {}
  if 'max_length' in arch.model_fields(config.model_name):
    overrides['max_length'] = max(int(config.model.get('max_length', 0)), longest)
  model = arch.model_from_config(config, **overrides)
  vocab = int(config.model.get('vocab_size', 256))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']

  def step_fn(tokens, cache):
    logits, mutated = model.apply({'params': params, 'cache': cache}, tokens, decode=True,
                                  mutable=['cache'])
    return logits[:, -1], mutated['cache']

  step = jax.jit(lambda cache, tok: step_fn(tok, cache), donate_argnums=0)
  greedy = jax.jit(lambda cache, first: decoding.generate(
      step_fn, cache, first, jax.random.key(0), steps, eos_id=-1, temperature=0.0))
  copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
  full = jax.jit(lambda t: model.apply({'params': params}, t)[:, -1])
  rows = []
  for length in lengths:
    tokens = jax.random.randint(jax.random.key(length), (1, length + steps), 4, vocab)
    cache = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros(
        (1, length + steps), jnp.int32), decode=True)['cache'])()
    first, prefilled = step(cache, tokens[:, :length])  # prefill the context

    def dispatched():
      cache = jax.block_until_ready(copy(prefilled))  # the timed steps consume it

      def timed():
        c, out = cache, None
        for i in range(steps):
          out, c = step(c, tokens[:, length + i:length + i + 1])
        return out
      return timed

    window = tokens[:, :length + 1]
    rows.append(dict(context=length,
                     step_ms=_median_ms(dispatched, reps, steps),
                     loop_ms=_median_ms(lambda: lambda: greedy(prefilled, first), reps, steps),
                     uncached_ms=_median_ms(lambda: lambda: full(window), reps, 1)))
  return rows, sum(x.size for x in jax.tree.leaves(params))


def bench_torch_decoding(config, lengths, steps, reps, threads=0):
  """Hugging Face GPT-2 of the config's shape, eager, with its KV cache: ms per new token
  after each context length, and its parameter count."""
  import torch
  import transformers
  if threads:
    torch.set_num_threads(threads)
  m = config.model
  hf = transformers.GPT2Config(
      vocab_size=int(m.get('vocab_size', 256)), n_positions=max(lengths) + steps,
      n_embd=int(m.embed_dim), n_layer=int(m.num_layers), n_head=int(m.num_heads),
      n_inner=m.get('mlp_dim'), activation_function='gelu_new', resid_pdrop=0.0,
      embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=float(m.get('norm_eps', 1e-5)))
  model = transformers.GPT2LMHeadModel(hf).eval()
  rows = {}
  for length in lengths:
    tokens = torch.randint(4, hf.vocab_size, (1, length + steps))
    times = []
    with torch.inference_mode():
      for _ in range(reps + 1):
        past = model(tokens[:, :length], use_cache=True).past_key_values
        start = time.perf_counter()
        for i in range(steps):
          out = model(tokens[:, length + i:length + i + 1], past_key_values=past,
                      use_cache=True)
          past = out.past_key_values
          out.logits[:, -1].argmax(-1)
        times.append(time.perf_counter() - start)
    rows[length] = 1e3 * statistics.median(times[1:]) / steps
  return rows, sum(p.numel() for p in model.parameters()), torch.get_num_threads()


def main(argv=None):
  from train import bench, config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='python -m examples.bench_decoding')
  p.add_argument('--config', default='configs/gpt_pydoc.py')
  p.add_argument('--lengths', default='64,256,1024', help='decoding context lengths')
  p.add_argument('--decode_steps', type=int, default=32, help='new tokens per repetition')
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--train_steps', type=int, default=10, help='0: no training benchmark')
  p.add_argument('--torch', action='store_true',
                 help="also time Hugging Face's GPT-2 of the same shape in PyTorch")
  p.add_argument('--torch_threads', type=int, default=0,
                 help="PyTorch's intra-op threads (0: its default); 1 on a shared machine")
  args = p.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    lengths = [int(x) for x in args.lengths.split(',')]
    decoding, num_params = bench_decoding(config, lengths, args.decode_steps, args.reps)
    training = bench.bench_training(config, args.train_steps) if args.train_steps else None
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  torch_note = ''
  if args.torch:
    try:
      pytorch, torch_params, threads = bench_torch_decoding(
          config, lengths, args.decode_steps, args.reps, args.torch_threads)
    except ImportError as e:
      print(f'PyTorch or transformers is not installed in this environment ({e}): '
            f'timing archzoo alone.')
    else:
      if torch_params != num_params:
        print(f'error: archzoo has {num_params:,} parameters, the PyTorch GPT-2 '
              f'{torch_params:,}', file=sys.stderr)
        return 1
      for r in decoding:
        r['pytorch_ms'] = pytorch[r['context']]
      torch_note = f'; PyTorch {threads} threads'
  print(f'decoding, batch 1 ({args.config}, {num_params:,} parameters): ms per new token, '
        f'median of {args.reps} x {args.decode_steps} tokens{torch_note}')
  cols = [c for c in ('step', 'loop', 'uncached', 'pytorch') if f'{c}_ms' in decoding[0]]
  print(f'{"context":>8}' + ''.join(f'{c:>10}' for c in cols))
  for r in decoding:
    print(f'{r["context"]:>8}' + ''.join(f'{r[c + "_ms"]:>10.2f}' for c in cols))
  result = {'decoding': decoding}
  if training:
    tokens = training['examples_per_sec'] * int(config.data.pack or 0)
    print(f'training: {tokens:,.0f} tokens/s, {training["step_ms"]:.0f} ms per step, '
          f'MFU {training["mfu"] or 0:.3f}')
    result['training'] = dict(training, tokens_per_sec=tokens)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
