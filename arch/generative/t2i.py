"""Text-to-image latent diffusion (Rombach et al. 2022, "High-resolution image synthesis
with latent diffusion models", the Stable Diffusion recipe) with classifier-free guidance
(Ho & Salimans 2022, "Classifier-free diffusion guidance").

Three runs of this codebase, two of them frozen (`config.frozen`, each trained first in
WORKDIR/frozen_NAME when no workdir is given, restored into a non-parameter collection no
optimizer touches, read through `stop_gradient`):
- `vae`: a KL autoencoder run (arch/generative/autoencoder_kl.py, e.g.
  configs/vae_digits.py:model=kl,data=caption_shapes: 32x32x3 -> 8x8x4), the first stage,
  used exactly as arch/generative/ldm.py uses it (x0 = s z, z a posterior draw, s = 1 /
  std of the run's latents; samples decoded by its decoder);
- `clip`: a CLIP run (arch/multimodal/clip.py, configs/clip_digits.py:data=caption_shapes,
  contrastive on images paired with their captions). Its TEXT TOWER gives the caption's
  token features: every position's final LayerNorm state (B, S, E) (`Model.text_tokens`),
  as SD cross-attends to all 77 states of CLIP ViT-L's text tower. The tower is causal, so
  a state sees the words up to its position; padding positions (id 0) see the whole
  caption, and, as in SD, no key mask is used;
- `reader` (optional): the attribute reader (arch/vision/attributes.py) that scores
  prompt-following at eval.

The denoiser is the diffusion U-Net with SD's spatial transformers
(arch/generative/diffusion_unet.py; `context_dim` = the text tower's width E), whose
cross-attention layers attend from the latent's pixels to the caption's S token states.
Objective: diffusion.py's (`diffusion.build`: DDPM's schedule, eps/v/x0 prediction, the
simple loss) over the latents, the context computed from batch['tokens'] at every step.

Classifier-free guidance. Prompt dropout: in training each caption is replaced, with
probability `cfg_dropout` (0.1), by the null caption, all S positions padding (id 0):
SD's empty prompt "" for a tokenizer whose padding is the caption's end. Its token states
come out of the same frozen tower, so the unconditional model eps_u(x_t) is the network
conditioned on the null caption's states: nothing else is special about it. Sampling with
guidance s uses eps_u + s (eps_c - eps_u) (`diffusion.guided`, on the prediction channels):
s = 1 is the conditional model, s = 0 the unconditional one (what "unconditional" means in
the eval below: the SAME network sampled with the null caption). DDIM (eta 0) or DDPM's
ancestral step on respaced timesteps, as diffusion.py's sampler, latents not clipped.

Eval on the held-out captions (caption_shapes' `test` split: compositions `train` never
shows), per example: `loss` (the training MSE at a fixed timestep and noise, the real
caption). With a reader: images sampled from each example's caption (`eval_steps`
DDIM steps, guidance `eval_guidance`, keys a fixed function of the image) read back and
scored as `attributes.prompt_following` scores them (`prompt_all`, `prompt_colour`,
`prompt_kind`, `prompt_relation`); the same for the null caption's samples
(`uncond_prompt_*`: the same network, unconditional); the sampled images against another
example's caption (the batch's attributes rolled by one: `shuffled_prompt_*`, the floor
of a model that ignores its caption); the frozen autoencoder's reconstruction of the
real image (`recon_prompt_*`: the ceiling the first stage allows).

Prompts (`train.sample --prompt TEXT`): captions in the data's words
(`task_kwargs.words`, caption_shapes.VOCAB; a word outside it is one ConfigError line);
without prompts the sampler (and the fd evaluator) cycles `task_kwargs.prompts`.

Config: `config.task = 'generative.t2i'`, `config.model_name = 'generative.diffusion_unet'`,
`config.frozen.vae`, `config.frozen.clip` (and `.reader`); task_kwargs `Options`.

Measured (configs/t2i_shapes.py, 2026-12-07, the loaded 2-core CPU): v-prediction, lr
1e-3, 800 steps over the KL run's step-300 checkpoint follow held-out prompts in colour
(0.523 at guidance 3 against 0.165 unconditional and 0.173 for shuffled captions) and
relation (0.504 against 0.228 / 0.262); kind stays at chance (0.346), as it does in the
first stage's reconstructions (ceiling kind 0.352, prompt_all 0.114); prompt_all 0.044
against 0.002 / 0.000; fd 424.1 against a floor of 36.5. (eps-prediction, lr 5e-4, 600
steps over a step-164 first stage stayed at chance everywhere; over the KL run's step
600: colour 0.537, relation 0.506, prompt_all 0.040, ceiling kind 0.383.)

Dimension key: B batch, H W C image, h w c latent, S caption tokens, E text width.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import diffusion, ldm
from arch.images import scale_images
from arch.multimodal import clip
from arch.task import ConfigError, Task, parse_options
from arch.vision import attributes
from arch.vocab import word_ids

VAE = ldm.VAE     # the frozen autoencoder run's collection
CLIP = 'clip'     # the frozen CLIP run's (its text tower encodes the captions)
READER = 'reader'  # the frozen attribute reader's (optional: eval's prompt-following)


@dataclasses.dataclass(frozen=True)
class Options(ldm.Options):
  """task_kwargs: latent diffusion's (cfg_dropout is the prompt dropout: None = 0.1), the
  captions and eval's sampling."""
  words: tuple = ()  # the caption vocabulary, index = id, 0 the pad (caption_shapes.VOCAB)
  text_length: int = 8  # S
  prompts: tuple = ()  # captions the sampler cycles without --prompt (and the fd eval)
  eval_guidance: float = 3.0  # guidance of eval's prompt-following samples
  eval_steps: int = 25  # their DDIM steps
  eval_unconditional: bool = True  # also score the null caption's samples (uncond_*)


def null_captions(b: int, length: int):
  """The null caption of classifier-free guidance: every position padding, (B, S) zeros."""
  return jnp.zeros((b, length), jnp.int32)


def drop_captions(rng, tokens_BS, rate: float):
  """Prompt dropout: each row replaced by the null caption with probability `rate`."""
  drop_B = jax.random.bernoulli(rng, rate, tokens_BS.shape[:1])
  return jnp.where(drop_B[:, None], 0, tokens_BS.astype(jnp.int32))


def text_encoder(ccfg):
  """(CLIP Model, its Task) of the frozen CLIP run's config."""
  if ccfg.get('task') != 'multimodal.clip':
    raise ConfigError(f"config.frozen.clip must be a multimodal.clip run (e.g. "
                      f"'configs/clip_digits.py:data=caption_shapes'), got task "
                      f"{ccfg.get('task')!r}")
  copts = parse_options(clip.Options, ccfg)
  return clip.build(ccfg, copts)[1], clip.make(ccfg), int(copts.text_length)


def _reader(rcfg):
  if rcfg is None:
    return None, None
  return arch.model_from_config(rcfg), arch.load(rcfg.task, 'make').make(rcfg)


def make(config) -> Task:
  """Batches hold caption_shapes' `image` (B, H, W, 3) uint8 and `tokens` (B, S) (and
  `colour`, `kind`, `relation` for prompt-following). Train metrics: `loss`, `mse`."""
  for key in ('input_size', 'channels'):
    if key in (config.get('task_kwargs') or {}):
      raise ConfigError(f'task_kwargs.{key}: the latent shape comes from the frozen '
                        f'autoencoder run; set it there')
  o = parse_options(Options, config)
  frozen = config.get('frozen') or {}
  for name, example in ((VAE, "'configs/vae_digits.py:model=kl,data=caption_shapes'"),
                        (CLIP, "'configs/clip_digits.py:data=caption_shapes'")):
    if not (frozen.get(name) or {}).get('config'):
      raise ConfigError(f'generative.t2i needs config.frozen.{name} = dict(spec={example}, '
                        f"workdir='')")
  words, s_len = tuple(o.words), int(o.text_length)
  if len(words) < 2:
    raise ConfigError('task_kwargs.words: the caption vocabulary (id 0 the pad) is needed')
  rate = 0.1 if o.cfg_dropout is None else float(o.cfg_dropout)
  if not 0.0 <= rate < 1.0:
    raise ConfigError(f'task_kwargs.cfg_dropout (the prompt dropout) must be in [0, 1), '
                      f'got {rate}')
  first = ldm.codec(frozen[VAE].config, o.posterior, float(o.latent_scale or 0.0))
  clip_model, clip_task, clip_len = text_encoder(frozen[CLIP].config)
  if clip_len != s_len:
    raise ConfigError(f'the frozen CLIP run reads captions of {clip_len} tokens; '
                      f'task_kwargs.text_length is {s_len}')
  reader_net, reader_task = _reader((frozen.get(READER) or {}).get('config'))
  shape = first.shape
  c = shape[-1]
  learned = o.variance == 'learned_range'
  net = arch.model_from_config(config, out_channels=2 * c if learned else c)
  clip_params = jax.eval_shape(lambda: clip_task.init(jax.random.key(0), {
      k: jnp.zeros(v.shape, v.dtype) for k, v in clip_task.example_batch(1).items()}))
  width = jax.eval_shape(lambda v: clip_model.apply(
      v, jnp.zeros((1, s_len), jnp.int32), method='text_tokens'), clip_params).shape[-1]
  if getattr(net, 'context_dim', None) != width:
    raise ConfigError(f'the denoiser cross-attends to the text tower\'s {width}-wide '
                      f'states: model.context_dim must be {width}, got '
                      f'{getattr(net, "context_dim", None)}')
  extra = (VAE, CLIP) + ((READER,) if reader_net is not None else ())

  def context(variables, tokens_BS):
    """The frozen text tower's token states (B, S, E) of captions (B, S)."""
    v = jax.lax.stop_gradient(variables[CLIP])
    return clip_model.apply(v, tokens_BS.astype(jnp.int32), method='text_tokens')

  def example_batch(n):
    return {'image': jax.ShapeDtypeStruct((n, *first.image_shape), jnp.uint8),
            'tokens': jax.ShapeDtypeStruct((n, s_len), jnp.int32)}

  def init_extra(rng, batch):
    b = batch['image'].shape[0]
    zeros = lambda spec: {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()}
    out = {VAE: first.task.init(rng, {'image': batch['image']}),
           CLIP: clip_task.init(rng, zeros(clip_task.example_batch(b)))}
    if reader_task is not None:
      out[READER] = reader_task.init(rng, zeros(reader_task.example_batch(b)))
    return out

  base = diffusion.build(
      config, o, shape=shape, to_x0=first.to_x0,
      from_x0=lambda v, x0: {'images': first.decode(v, x0)},
      noise_key=lambda batch: diffusion.image_keys(batch['image']),
      example_batch=example_batch, init_extra=init_extra, extra_collections=extra,
      clip_x0=False, null_context=lambda v, b: context(v, null_captions(b, s_len)))

  def with_context(variables, batch, tokens_BS):
    return {'image': batch['image'], 'context': context(variables, tokens_BS)}

  def loss(variables, batch, rng):
    k_drop, k_base = jax.random.split(rng)
    tokens = drop_captions(k_drop, batch['tokens'], rate) if rate else batch['tokens']
    return base.loss(variables, with_context(variables, batch, tokens), k_base)

  def sample(variables, batch, rng, **kwargs):
    """{'images': (B, H, W, C) uint8}, row r drawn from the caption batch['tokens'][r]:
    diffusion.py's sampler over the latents, guided against the null caption."""
    return base.sample(variables, {'context': context(variables, batch['tokens'])}, rng,
                       **kwargs)

  def following(variables, images_BHWC, colour, kind, relation):
    """Per-example prompt-following of uint8 images, read by the frozen reader."""
    x = scale_images(images_BHWC, (attributes.SIZE, attributes.SIZE))
    hits = attributes.attribute_hits(
        reader_net.apply(jax.lax.stop_gradient(variables[READER]), x), colour, kind, relation)
    f = lambda h: h.astype(jnp.float32)
    return {'prompt_all': f(hits['colour'].all(-1) & hits['kind'].all(-1) & hits['relation']),
            'prompt_colour': f(hits['colour']).mean(-1), 'prompt_kind': f(hits['kind']).mean(-1),
            'prompt_relation': f(hits['relation'])}

  def evaluate(variables, batch):
    tokens = batch['tokens']
    out = {'loss': base.evaluate(variables, with_context(variables, batch, tokens))['loss']}
    if reader_net is None:
      return out
    image = batch['image']
    ids = jax.vmap(lambda k: jax.random.randint(k, (), 0, 2 ** 30))(
        diffusion.image_keys(image, seed=3))
    sampled = lambda g: sample(variables, batch, jax.random.key(0), row_ids=ids,
                               steps=int(o.eval_steps), sampler='ddim', eta=0.0,
                               guidance=g)['images']
    guided_images = sampled(float(o.eval_guidance))
    recon = first.decode(variables, first.to_x0(variables, batch))
    truth = (batch['colour'], batch['kind'], batch['relation'])
    rolled = tuple(jnp.roll(a, 1, axis=0) for a in truth)
    runs = [('', guided_images, truth), ('recon_', recon, truth),
            ('shuffled_', guided_images, rolled)]
    if o.eval_unconditional:
      runs.append(('uncond_', sampled(0.0), truth))
    for prefix, images, attrs in runs:
      out.update({prefix + k: v for k, v in following(variables, images, *attrs).items()})
    return out

  def prompt_batch(prompts, num_samples):
    """{'tokens': (B, S)}: one row a caption (text or word ids); without prompts,
    task_kwargs.prompts cycled."""
    if prompts is None:
      if not o.prompts:
        raise ConfigError('no prompt given and task_kwargs.prompts is empty: give --prompt')
      prompts = [o.prompts[i % len(o.prompts)] for i in range(num_samples)]
    if len(prompts) != num_samples:
      raise ConfigError(f'{len(prompts)} prompts for {num_samples} samples')
    return {'tokens': np.stack([word_ids(p, words, s_len) for p in prompts])}

  return base._replace(loss=loss, evaluate=evaluate, sample=sample,
                       prompt_batch=prompt_batch, example_batch=example_batch)
