"""Published generative sizes reachable from configs (issues 22, 23): `python -m train.summary
--config configs/X.py:variant=V` counts exactly the reference implementation's parameters,
through the route train.summary takes (the config's task, eval_shape of its init); SDXL's
added 'text_time' embedding runs on a tiny SDXL-like U-Net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from arch.generative import diffusion_unet as du
from arch.sequence import gpt
from arch.task import ConfigError
from train import config_lib, summary
from train.errors import UserError

# The reference counts, sum(p.numel() for p in model.parameters()) of models built from
# their configurations with diffusers 0.42.1 / torch 2.13 (random init), 2026-12-06.
REFERENCE = {
    # UNet2DConditionModel(in_channels=4, out_channels=4, cross_attention_dim=768,
    # block_out_channels=(320, 640, 1280, 1280), down_block_types=3 x CrossAttnDownBlock2D +
    # DownBlock2D, up_block_types=UpBlock2D + 3 x CrossAttnUpBlock2D, layers_per_block=2,
    # attention_head_dim=8): Stable Diffusion 1.5's U-Net.
    'ddpm_digits.py:variant=sd15': 859_520_964,
    # UNet2DConditionModel with stable-diffusion-xl-base-1.0's unet/config.json:
    # block_out_channels=(320, 640, 1280), down_block_types=(DownBlock2D, CrossAttnDownBlock2D,
    # CrossAttnDownBlock2D), up_block_types reversed, transformer_layers_per_block=(1, 2, 10),
    # attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    # addition_embed_type='text_time', addition_time_embed_dim=256,
    # projection_class_embeddings_input_dim=2816, layers_per_block=2.
    'ddpm_digits.py:variant=sdxl': 2_567_463_684,
    # AutoencoderKL(in_channels=3, out_channels=3, 4 x DownEncoderBlock2D / UpDecoderBlock2D,
    # block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
    # norm_num_groups=32): Stable Diffusion 1.5's VAE.
    'vae_digits.py:model=kl,variant=sd15': 83_653_863,
    # AutoencoderKLCogVideoX() (its default configuration is CogVideoX's VAE).
    'video_vae_digits.py:variant=cogvideox': 215_583_907,
}
# DiT (the paper's table 1) at 256x256 (32x32x4 latents), 1,000 classes + the null class,
# learned sigma: diffusers' DiTTransformer2DModel(num_attention_heads, attention_head_dim =
# width / heads, in_channels=4, out_channels=8, num_layers, sample_size=32, patch_size,
# num_embeds_ada_norm=1000) less the (depth - 1) extra copies of the timestep MLP and label
# table its blocks keep (facebookresearch/DiT shares one; per-block copy: S 630,912,
# B 1,556,736, L 2,337,792, XL 2,777,472 parameters). XL/2: 749,826,464 - 27 x 2,777,472.
DIT = {
    'S/2': 32_865_056, 'S/4': 32_920_448, 'S/8': 33_142_016,
    'B/2': 130_315_808, 'B/4': 130_426_496, 'B/8': 130_869_248,
    'L/2': 457_840_672, 'L/4': 457_988_224, 'L/8': 458_578_432,
    'XL/2': 674_834_720, 'XL/4': 675_000_704, 'XL/8': 675_664_640,
}
REFERENCE.update({f'dit_digits.py:variant={v}': n for v, n in DIT.items()})
# RobertaForMaskedLM(RobertaConfig(vocab_size=50265, max_position_embeddings=514,
# type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, **size)), transformers 5.25.0 /
# torch 2.13, 2026-12-07, the tied decoder counted once; size {} for roberta-base and
# hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
# for roberta-large.
REFERENCE.update({'roberta_pydoc.py:variant=base': 124_697_433,
                  'roberta_pydoc.py:variant=large': 355_412_057})
# GPT-3 (Brown et al. 2020, table 2.1): the size the paper states for each model, millions.
GPT3_STATED_M = {'gpt3-small': 125, 'gpt3-medium': 350, 'gpt3-large': 760, 'gpt3-xl': 1300,
                 'gpt3-2.7b': 2700, 'gpt3-6.7b': 6700, 'gpt3-13b': 13_000,
                 'gpt3-175b': 175_000}


def gpt2_layout_count(layers, width, vocab=50257, context=2048):
  """GPT-2's layout by hand: per block two LayerNorms (4D), QKV and output projections
  with biases (4D^2 + 4D), the MLP D -> 4D -> D with biases (8D^2 + 5D); the token and
  position tables (the head is tied); the final LayerNorm."""
  return layers * (12 * width**2 + 13 * width) + (vocab + context) * width + 2 * width


def summary_total(spec, capsys):
  assert summary.main(['--config', f'configs/{spec}']) == 0
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.startswith('total_params=')
  return int(last.split('=')[1])


@pytest.mark.parametrize('spec', list(REFERENCE))
def test_published_size_equals_the_reference_count(spec, capsys):
  assert summary_total(spec, capsys) == REFERENCE[spec]


@pytest.mark.parametrize('variant', list(GPT3_STATED_M))
def test_gpt3_sizes_are_the_papers(variant, capsys):
  layers, width, heads = gpt.GPT3[variant]
  assert width % heads == 0 and width // heads in (64, 80, 96, 128)  # the table's d_head
  # The layers as one scanned block (stacked params, the same count) trace in a fraction of
  # the time of 96 unrolled ones; gpt3-small takes the default, unrolled route.
  scan = [] if variant == 'gpt3-small' else ['--config.model.scan_layers=True']
  assert summary.main(['--config', f'configs/gpt_pydoc.py:variant={variant}', *scan]) == 0
  last = capsys.readouterr().out.strip().splitlines()[-1]
  total = int(last.removeprefix('total_params='))
  assert total == gpt2_layout_count(layers, width)
  # The paper rounds loosely (medium's 355.9M is stated as 350M): within 2% of its figure.
  assert abs(total / (GPT3_STATED_M[variant] * 1e6) - 1) < 0.02


def test_dit_xl2_is_the_official_count_without_its_frozen_position_table():
  # facebookresearch/DiT prints 675,129,632 for DiT-XL/2, counting its pos_embed, a frozen
  # nn.Parameter of 16 x 16 tokens x 1152 (here a computed sin-cos constant).
  assert DIT['XL/2'] + 16 * 16 * 1152 == 675_129_632


def test_the_digits_defaults_are_unchanged(capsys):
  assert summary_total('ddpm_digits.py', capsys) == summary_total(
      'ddpm_digits.py:variant=digits', capsys)
  assert summary_total('vae_digits.py:model=kl', capsys) == 653_695
  assert summary_total('video_vae_digits.py', capsys) == 469_177
  assert summary_total('dit_digits.py', capsys) == 724_232


def test_published_sizes_refuse_training_in_one_line(tmp_path, capsys):
  from train.__main__ import main
  assert main(['--config', 'configs/dit_digits.py:variant=S/8',
               '--workdir', str(tmp_path / 'run')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'published size, for `python -m train.summary` only' in err[0]
  assert 'DiT-S/8' in err[0]
  assert not list((tmp_path / 'run').rglob('*.json'))  # no config.json: it stopped before


def test_bad_published_arguments_are_one_line_errors():
  for spec in ('ddpm_digits.py:variant=sd21', 'ddpm_digits.py:variant=sdxl,conditional',
               'vae_digits.py:variant=sd15', 'dit_digits.py:variant=XL/3',
               'dit_digits.py:variant=XL/2,patch=4', 'video_vae_digits.py:variant=cogvideox,tiny'):
    with pytest.raises(UserError):
      config_lib.load(f'configs/{spec}')


# ---------------------------------------------------------------------- a tiny SDXL-like U-Net

# SDXL's layout at toy widths: a plain first level, cross-attention below it with per-level
# heads (2, 4) of width 16 and depths (1, 2), Linear projections, 'text_time' addition
# (8-wide sinusoids of 6 ids + a 12-wide pooled text embedding).
TINY_XL = dict(out_channels=4, block_channels=(32, 64), attention=(False, True),
               layers_per_block=1, num_heads=(2, 4), transformer_depth=(1, 2), context_dim=16,
               linear_projection=True, addition_time_embed_dim=8, addition_time_ids=6,
               addition_text_dim=12, groups=8)


def _normal(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _random(shapes, seed=0, scale=0.3):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                      shapes)


def _inputs():
  x, t, ctx = _normal(2, 8, 8, 4), jnp.asarray([3.0, 700.0]), _normal(2, 5, 16, seed=1)
  text = _normal(2, 12, seed=2)
  ids = jnp.asarray([[1024, 1024, 0, 0, 1024, 1024], [512, 768, 16, 32, 1024, 1024]],
                    jnp.float32)
  return x, t, ctx, text, ids


MODEL = du.UNet(**TINY_XL)
# one compiled forward for the tests below: the output and the added embedding
_forward = jax.jit(lambda v, x, t, c, txt, i: MODEL.apply(
    v, x, t, None, c, text_embeds_BP=txt, time_ids_BK=i, mutable=['intermediates'],
    capture_intermediates=lambda m, _: m.name == 'add_linear_2'))


def _tiny_variables(seed=0):
  x, t, ctx, text, ids = _inputs()
  shapes = nn.meta.unbox(jax.eval_shape(
      lambda: MODEL.init(jax.random.key(0), x, t, None, ctx, text_embeds_BP=text,
                         time_ids_BK=ids)))
  return shapes, _random(shapes, seed)


def test_tiny_sdxl_added_embedding_conditions_the_output():
  x, t, ctx, text, ids = _inputs()
  shapes, variables = _tiny_variables()
  # init without the conditioning inputs gives the same shapes (they come from attributes)
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(
      lambda s: s.shape, nn.meta.unbox(jax.eval_shape(
          lambda: MODEL.init(jax.random.key(0), x[:1], t[:1]))))
  p = shapes['params']
  assert p['add_linear_1']['kernel'].shape == (12 + 6 * 8, 128)  # diffusers' 2816 at full size
  assert p['down1_attn0']['proj_in']['kernel'].shape == (64, 64)  # Linear, not a 1x1 conv
  assert p['down1_attn0']['block1']['attn1']['query']['kernel'].shape == (64, 4, 16)
  assert p['down1_attn0']['block0']['attn2']['key']['kernel'].shape == (16, 4, 16)
  assert 'down0_attn0' not in p and 'block2' not in p['mid_attn']  # plain level; depth 2

  out = _forward(variables, x, t, ctx, text, ids)[0]
  assert out.shape == (2, 8, 8, 4) and bool(jnp.isfinite(out).all())
  # each row's output moves with its own ids and text embedding, and only with them
  ids2 = ids.at[1, 2].add(64.0)
  text2 = text.at[1].add(1.0)
  for changed in (_forward(variables, x, t, ctx, text, ids2)[0],
                  _forward(variables, x, t, ctx, text2, ids)[0]):
    diff = np.abs(np.asarray(changed - out)).reshape(2, -1).max(1)
    assert diff[0] == 0.0 and diff[1] > 1e-3
  with pytest.raises(ConfigError, match='time_ids_BK'):
    MODEL.apply(variables, x, t, None, ctx)
  with pytest.raises(ConfigError, match='context states'):
    MODEL.apply(variables, x, t, None, None, text_embeds_BP=text, time_ids_BK=ids)


def test_added_embedding_is_mlp_of_text_then_id_sinusoids():
  """The added embedding against numpy: Linear(SiLU(Linear([text, cos|sin of each id])))."""
  x, t, ctx, text, ids = _inputs()
  _, variables = _tiny_variables()
  state = _forward(variables, x, t, ctx, text, ids)[1]
  got = np.asarray(state['intermediates']['add_linear_2']['__call__'][0])
  p = jax.tree.map(np.asarray, variables['params'])
  freqs = 10_000.0 ** (-np.arange(4) / 4)
  angle = np.asarray(ids)[..., None] * freqs  # (B, 6, 4)
  sinus = np.concatenate([np.cos(angle), np.sin(angle)], -1).reshape(2, 48)
  h = np.concatenate([np.asarray(text), sinus], -1) @ p['add_linear_1']['kernel'] \
      + p['add_linear_1']['bias']
  h = h / (1 + np.exp(-h))
  want = h @ p['add_linear_2']['kernel'] + p['add_linear_2']['bias']
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_linear_projection_equals_the_1x1_conv_with_the_same_weights():
  x, ctx = _normal(2, 4, 4, 16), _normal(2, 3, 8, seed=1)
  kw = dict(num_heads=2, depth=1, cross=True, groups=4)
  linear, conv = du.SpatialTransformer(**kw, linear=True), du.SpatialTransformer(**kw)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: conv.init(jax.random.key(0), x, ctx)))
  variables = _random(shapes, seed=5)
  as_linear = jax.tree_util.tree_map_with_path(
      lambda path, v: v[0, 0] if any(getattr(k, 'key', '') in ('proj_in', 'proj_out')
                                     for k in path) and v.ndim == 4 else v, variables)
  want = jax.jit(conv.apply)(variables, x, ctx)
  assert float(jnp.abs(want - x).max()) > 1e-2  # the transformer is not a no-op here
  np.testing.assert_allclose(jax.jit(linear.apply)(as_linear, x, ctx), want, rtol=1e-5,
                             atol=1e-5)
