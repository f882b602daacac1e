"""CLIP (Radford et al. 2021, "Learning transferable visual models from natural language
supervision") with composable towers; ALIGN (Jia et al. 2021, "Scaling up visual and
vision-language representation learning with noisy text supervision") is a choice of them.

`Model` = an image tower (images -> (B, D_img)) + a text tower (tokens -> (B, D_txt)),
each followed by a linear projection without bias to the shared width E, and a learned
temperature: `logit_scale` starts at log(1 / 0.07) and exp(logit_scale) is clamped at 100
(OpenAI clamps the parameter after each step; here the forward pass clamps it). The
objective is the symmetric cross-entropy over the batch's image-text similarities
(`contrastive.clip_loss`).

CLIP's own towers, in Hugging Face's `CLIPModel` layout:
  VisionTransformer  patches embedded by a conv without bias, a class token, learned
                     positions, a LayerNorm before the encoder ("pre_layrnorm"), pre-norm
                     blocks with quick-GELU MLPs, a LayerNorm on the class token.
  TextTransformer    token + learned position embeddings, causal pre-norm blocks with
                     quick-GELU MLPs, a final LayerNorm, pooled at each row's first
                     end-of-text token (`eos_id`; the last position in a row without one).
                     Padding after it needs no mask: causal attention never looks ahead.
`VARIANTS` B/32, B/16, L/14, L/14-336 count exactly what HF's CLIPModel does for
openai/clip-vit-{base-patch32, base-patch16, large-patch14, large-patch14-336}
(151,277,313; 149,620,737; 427,616,513; 427,944,193).

Any arch backbone that returns a representation with `num_classes=0` (vision.vit,
vision.resnet, these towers, ...) serves as the image tower. The text tower either pools
itself (`text_pool='tower'`) or returns a dict whose 'hidden' (B, T, D) is read at the
first token (`text_pool='first'`: BERT's [CLS], arch/sequence/bert.py). ALIGN is
EfficientNet without its head conv (`vision.efficientnet`, `head_ratio=0`) whose pooled output is
the embedding (`image_projection=False`), a BERT text tower on its [CLS] token with a
projection that has a bias, and the same loss with the temperature starting at 1
(`logit_scale_init=0`; HF's ALIGN adds label smoothing 0.1, not done here). HF's
AlignModel(AlignConfig()) has 172,117,841 parameters, and so has
`ALIGN_VARIANTS['B7-base']` (BERT with `pretraining_heads=False`: encoder and pooler).

The task (`config.task = 'multimodal.clip'`) pairs labelled images with captions made
from their labels: each example draws a template from `task_kwargs.train_templates` at
random every step ('{0}', '{1}', ... are the class's names, e.g. '7' and 'seven'), read
from a precomputed (templates, classes, L) table of byte-level tokens (<s> bytes </s>,
padded). Several images of one class in a batch have captions of the same class:
`same_class='negatives'` (default) is CLIP's plain loss, which counts every other pair in
the batch, those included, as a negative; `same_class='positives'` gives each image a
uniform target over all captions of its class and each caption over all images of its
class (UniCL's targets, Yang et al. 2022). (Same-class pairs that drew the same template
have equal captions, hence equal logits; on those the two settings agree.) Either way
the loss stays well above 0 on labelled data like this. Under pmap both towers' embeddings are
gathered over the device axis first, so the loss is over the global batch as under jit.

Eval: `zeroshot_accuracy`, each image classified by the class whose prompt embedding is
most similar, prompts from `task_kwargs.eval_templates` only (which must not overlap the
training templates), with CLIP's prompt ensembling: per class, the mean of the unit
embeddings of its prompts, normalised. `features` is the image tower's representation
(before the projection), for the linear-probe and k-NN evaluators.

Config keys read: `model_name`, `model` (the image tower), `task_kwargs` (`Options`):
`input_size`, `channels`, `augment`, `host_size` (contrastive.ImageOptions),
`text_model_name`, `text_model`, `text_pool`, `text_length`, `embed_dim`,
`image_projection`, `text_projection_bias`, `logit_scale_init`, `class_names`,
`train_templates`, `eval_templates`, `same_class`. Train metrics: `loss`, `retrieval_accuracy` (each
image's most similar caption in the global batch is of its class), `logit_scale`.

Dimension key: B batch, H W image height and width, C channels, P patches (tokens),
T text length, D tower width, E embedding width, K classes, N templates.
"""

import dataclasses
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.layers.conv import classifier_head
from arch.layers.embed import LearnedPositions, PatchEmbed, norm, token_embed
from arch.layers.transformer import Block
from arch.multimodal.contrastive import ImageOptions, ImageSetup, clip_loss, gather, l2_normalize
from arch import vocab
from arch.task import ConfigError, Task, parse_options

Dtype = Any
MAX_LOGIT_SCALE = 100.0


# ---------------------------------------------------------------------------------------
# Towers
# ---------------------------------------------------------------------------------------

class Transformer(nn.Module):
  """`depth` pre-norm blocks with quick-GELU MLPs (CLIP's residual attention blocks),
  initialised as OpenAI's CLIP: normal(D^-1/2) in, normal(D^-1/2 (2 depth)^-1/2) out."""
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, *, causal: bool = False, train: bool = False):
    d = x_BTD.shape[-1]
    for i in range(self.depth):
      x_BTD = Block(self.num_heads, self.mlp_dim, pre_norm=True, norm_eps=1e-5,
                    activation='quick_gelu', init_stddev=d ** -0.5,
                    out_init_stddev=d ** -0.5 * (2 * self.depth) ** -0.5, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f'layers_{i}')(
                        x_BTD, causal=causal, deterministic=not train)
    return x_BTD


class VisionTransformer(nn.Module):
  """CLIP's image tower: images (B, H, W, C) -> the normed class token (B, D) float32
  (or, with `num_classes`, logits of a linear head on it; with `tokens=True`, every patch
  token through the same final LayerNorm (B, P, D), as open_clip's `output_tokens`)."""
  patch_size: int = 32
  image_size: int = 224
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  num_classes: int = 0  # 0: the representation; > 0: a classifier (vision.classification)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False, tokens: bool = False):
    d = self.width
    x_BPD = PatchEmbed(d, self.patch_size, use_bias=False, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='patch_embed')(x_BHWC)
    b, p = x_BPD.shape[:2]
    expected = (self.image_size // self.patch_size) ** 2
    if p != expected:
      raise ValueError(f'{x_BHWC.shape[1]}x{x_BHWC.shape[2]} images make {p} patches; the '
                       f'position table holds {expected} (image_size={self.image_size})')
    init = nn.initializers.normal(d ** -0.5)
    cls = self.param('cls_token', nn.with_logical_partitioning(init, ('embed',)), (d,),
                     self.param_dtype)
    x_BPD = jnp.concatenate([jnp.broadcast_to(jnp.asarray(cls, self.dtype), (b, 1, d)),
                             x_BPD.astype(self.dtype)], axis=1)
    pos_BPD = LearnedPositions(p + 1, d, d ** -0.5, param_dtype=self.param_dtype,
                               name='pos_embed')(jnp.arange(p + 1)[None])
    x_BPD = x_BPD + pos_BPD.astype(self.dtype)
    layer_norm = lambda name: norm('layer', 1e-5, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name)
    x_BPD = layer_norm('pre_norm')(x_BPD)
    x_BPD = Transformer(self.depth, self.num_heads, self.mlp_dim, self.dtype,
                        self.param_dtype, name='encoder')(x_BPD, train=train)
    if tokens:  # the LayerNorm acts per token: the class token's output is unchanged
      return layer_norm('post_norm')(x_BPD[:, 1:]).astype(jnp.float32)
    rep_BD = layer_norm('post_norm')(x_BPD[:, 0])
    if not self.num_classes:
      return rep_BD.astype(jnp.float32)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(rep_BD).astype(
        jnp.float32)


def eos_positions(tokens_BT, eos_id: int = vocab.EOS):
  """Each row's first `eos_id`, or its last position when it has none: (B,) int."""
  is_eos_BT = tokens_BT == eos_id
  return jnp.where(is_eos_BT.any(axis=1), jnp.argmax(is_eos_BT, axis=1),
                   tokens_BT.shape[1] - 1)


class TextTransformer(nn.Module):
  """CLIP's text tower: tokens (B, T) int -> the normed state at each row's end-of-text
  token (B, D) float32 (with `tokens=True`, every position's normed state (B, T, D): the
  token features a text-to-image model cross-attends to, as SD reads CLIP's)."""
  vocab_size: int = 49408
  max_length: int = 77  # positions the learned table holds
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: int = 2048
  eos_id: int = vocab.EOS  # the pooled token (OpenAI's tokenizer: 49407, its largest id)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, tokens: bool = False):
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'text length {t} exceeds max_length {self.max_length}')
    x_BTD = token_embed(self.vocab_size, self.width, 0.02, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='token_embed')(tokens_BT)
    pos_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
    x_BTD = x_BTD + LearnedPositions(self.max_length, self.width, 0.01,
                                     param_dtype=self.param_dtype,
                                     name='pos_embed')(pos_BT).astype(self.dtype)
    x_BTD = Transformer(self.depth, self.num_heads, self.mlp_dim, self.dtype,
                        self.param_dtype, name='encoder')(x_BTD, causal=True, train=train)
    x_BTD = norm('layer', 1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='final_norm')(x_BTD)
    if tokens:
      return x_BTD.astype(jnp.float32)
    eos_B = eos_positions(tokens_BT, self.eos_id)
    return x_BTD[jnp.arange(b), eos_B].astype(jnp.float32)


# ---------------------------------------------------------------------------------------
# The dual encoder
# ---------------------------------------------------------------------------------------

class Model(nn.Module):
  """CLIP: (images (B, H, W, C), tokens (B, T)) -> unnormalised embeddings ((B, E), (B, E))
  float32, from any image and text towers (see the module doc)."""
  image_tower: nn.Module
  text_tower: nn.Module
  embed_dim: int = 512
  image_projection: bool = True  # False: the image representation is the embedding (ALIGN)
  text_projection_bias: bool = False  # ALIGN's text projection has one
  text_pool: str = 'tower'  # 'tower': it returns (B, D) | 'first': its 'hidden'[:, 0]
  logit_scale_init: float = math.log(1 / 0.07)  # ALIGN: 0 (temperature 1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.text_pool not in ('tower', 'first'):
      raise ValueError(f"unknown text_pool {self.text_pool!r}; valid: 'tower', 'first'")
    proj = lambda bias, name: nn.Dense(
        self.embed_dim, use_bias=bias, dtype=self.dtype, param_dtype=self.param_dtype,
        name=name, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ('mlp', 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))
    self.visual_projection = proj(False, 'visual_projection') if self.image_projection else None
    self.text_projection = proj(self.text_projection_bias, 'text_projection')
    self.logit_scale = self.param('logit_scale', nn.with_logical_partitioning(
        nn.initializers.constant(self.logit_scale_init), ()), (), jnp.float32)

  def image_representation(self, x_BHWC, *, train: bool = False):
    """The image tower's output (B, D): what probes read."""
    return self.image_tower(x_BHWC, train=train)

  def image_tokens(self, x_BHWC):
    """The image tower's patch tokens (B, P, D) in inference mode (towers that take
    `tokens=True`: CLIP's VisionTransformer), e.g. a frozen encoder for Flamingo."""
    return self.image_tower(x_BHWC, train=False, tokens=True)

  def text_tokens(self, tokens_BT):
    """The text tower's per-token states (B, T, D) in inference mode (towers that take
    `tokens=True`: CLIP's TextTransformer), e.g. a frozen text encoder for text-to-image."""
    return self.text_tower(tokens_BT, train=False, tokens=True)

  def text_representation(self, tokens_BT, *, train: bool = False):
    out = self.text_tower(tokens_BT, train=train)
    return out if self.text_pool == 'tower' else out['hidden'][:, 0]

  def encode_image(self, x_BHWC, *, train: bool = False):
    h_BD = self.image_representation(x_BHWC, train=train)
    if self.visual_projection is None:
      if h_BD.shape[-1] != self.embed_dim:
        raise ValueError(f'without an image projection the image representation '
                         f'({h_BD.shape[-1]} wide) is the embedding: embed_dim must equal it')
      return h_BD.astype(jnp.float32)
    return self.visual_projection(h_BD).astype(jnp.float32)

  def encode_text(self, tokens_BT, *, train: bool = False):
    return self.text_projection(self.text_representation(tokens_BT, train=train)).astype(
        jnp.float32)

  def log_scale(self):
    """logit_scale clamped so that exp(logit_scale) <= 100."""
    return jnp.minimum(jnp.asarray(self.logit_scale, jnp.float32), math.log(MAX_LOGIT_SCALE))

  def __call__(self, x_BHWC, tokens_BT, *, train: bool = False):
    return self.encode_image(x_BHWC, train=train), self.encode_text(tokens_BT, train=train)


def _forward(model, x_BHWC, tokens_BT, train):
  img_BE, txt_BE = model(x_BHWC, tokens_BT, train=train)
  return img_BE, txt_BE, model.log_scale()


def contrastive_loss(img_BE, txt_BE, log_scale, labels_B=None, axis_name: Optional[str] = None):
  """CLIP's loss over the global batch (embeddings gathered over `axis_name` under pmap);
  with `labels_B`, every same-label pair is a positive (uniform targets over them).
  Returns (loss, logits (B_global, B_global), the global labels or None)."""
  img_BE, txt_BE = gather(img_BE, axis_name), gather(txt_BE, axis_name)
  value, logits = clip_loss(img_BE, txt_BE, log_scale)
  if labels_B is None:
    return value, logits, None
  labels_B = gather(labels_B, axis_name)
  same = (labels_B[:, None] == labels_B[None]).astype(jnp.float32)
  # `same` is symmetric, so these rows are also each caption's targets over the images.
  targets = same / same.sum(axis=1, keepdims=True)
  ce = optax.softmax_cross_entropy
  return (ce(logits, targets).mean() + ce(logits.T, targets).mean()) / 2, logits, labels_B


def zeroshot_classifier(prompt_NKE):
  """CLIP's prompt ensemble: per class, the normalised mean of its N unit prompt
  embeddings: (K, E)."""
  return l2_normalize(l2_normalize(prompt_NKE).mean(axis=0))


def zeroshot_logits(img_BE, classifier_KE, log_scale):
  return jnp.exp(log_scale) * l2_normalize(img_BE) @ classifier_KE.T


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

# Each class's names: '{0}' in a template is the numeral, '{1}' the word.
DIGIT_NAMES = tuple((str(i), w) for i, w in enumerate(
    'zero one two three four five six seven eight nine'.split()))
# Captions of the digits configs; the eval (zero-shot) templates are held out of training.
DIGIT_TRAIN_TEMPLATES = (
    '{0}', '{1}', 'a photo of the digit {0}', 'a photo of the number {1}', 'handwritten {0}',
    'handwritten {1}', 'the number {1} written by hand', 'the digit {0} written by hand',
    'a scan of a handwritten {0}', 'an image of the number {1}', 'a blurry photo of a {0}',
    'a small {1}', 'a low resolution image of the digit {1}', 'someone wrote a {0}',
    'a {1} on a form', 'the numeral {0}')
DIGIT_EVAL_TEMPLATES = (
    'a picture of a {0}', 'a drawing of the number {1}', 'this is a handwritten {1}',
    'a pixelated {0}', 'the digit {1} drawn by hand', 'an image of a {0}')


def tokenize(texts: Sequence[str], length: int) -> np.ndarray:
  """<s> UTF-8 bytes </s>, padded with <pad>: (N, length) int32 byte-level ids."""
  out = np.full((len(texts), length), vocab.PAD, np.int32)
  for i, text in enumerate(texts):
    ids = [vocab.BOS, *(b + vocab.NUM_SPECIAL for b in text.encode('utf-8')), vocab.EOS]
    if len(ids) > length:
      raise ConfigError(f'caption {text!r} takes {len(ids)} tokens; text_length is {length}')
    out[i, :len(ids)] = ids
  return out


def captions(templates: Sequence[str], class_names) -> list[list[str]]:
  """[template][class] caption strings."""
  return [[t.format(*names) for names in class_names] for t in templates]


def caption_table(templates: Sequence[str], class_names, length: int) -> np.ndarray:
  """Tokens of every (template, class) caption: (N, K, length) int32."""
  texts = [c for row in captions(templates, class_names) for c in row]
  return tokenize(texts, length).reshape(len(templates), len(class_names), length)


# ---------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Options(ImageOptions):
  """CLIP's task_kwargs: the image options, the text tower, the captions."""
  text_model_name: str = 'multimodal.clip:TextTransformer'  # the text tower's model name
  text_model: dict = dataclasses.field(default_factory=dict)  # ... and its kwargs
  text_pool: str = 'tower'  # 'tower': it returns (B, D) | 'first': its 'hidden'[:, 0]
  text_length: int = 32  # captions' padded length in tokens
  embed_dim: int = 512  # the joint embedding's width
  image_projection: bool = True  # False: the image representation is the embedding (ALIGN)
  text_projection_bias: bool = False
  logit_scale_init: float = math.log(1 / 0.07)  # log of the initial softmax scale
  class_names: tuple = DIGIT_NAMES  # per class, the names a template's '{0}', '{1}' take
  train_templates: tuple = ()  # caption templates; required
  eval_templates: tuple = ()  # zero-shot prompts, held out of training; required
  same_class: str = 'negatives'  # or 'positives': same-class pairs count as matches
  # 'templates': captions from class labels (above); 'batch': each example's own caption,
  # batch['tokens'] (B, text_length) ids (a captioned dataset, e.g. caption_shapes)
  captions: str = 'templates'


def _text_tower(config, opts: Options):
  """`task_kwargs.text_model_name` with `text_model` kwargs and the config's dtypes."""
  name = opts.text_model_name
  kwargs = dict(opts.text_model)
  fields = arch.model_fields(name)
  for key in ('compute_dtype', 'param_dtype'):
    field = 'dtype' if key == 'compute_dtype' else key
    if config.get(key) and field in fields:
      kwargs.setdefault(field, config.get(key))
  return arch.build_model(name, **kwargs)


def build(config, opts: Options):
  """(ImageSetup, Model) of a CLIP/ALIGN config and its parsed options: its image handling
  and dual encoder."""
  s = ImageSetup(config, opts)
  model = Model(s.backbone, _text_tower(config, opts), int(opts.embed_dim),
                image_projection=bool(opts.image_projection),
                text_projection_bias=bool(opts.text_projection_bias),
                text_pool=opts.text_pool,
                logit_scale_init=float(opts.logit_scale_init))
  return s, model


def caption_hits(sim_BB, tokens_BT):
  """Per row of a (queries, candidates) similarity matrix over one batch: whether the most
  similar candidate carries the query's own caption (equal tokens; a batch may hold one
  caption several times): (B,) float32."""
  best_B = sim_BB.argmax(axis=1)
  return (tokens_BT[best_B] == tokens_BT).all(axis=1).astype(jnp.float32)


def make_captioned(config, opts: Options) -> Task:
  """CLIP on a captioned dataset (`captions='batch'`): image i is paired with its own
  caption batch['tokens'][i]. Train metrics `loss`, `retrieval_accuracy` (an image's most
  similar caption in the global batch equals its own). Eval per example, within the eval
  batch: `retrieval_accuracy` (image -> caption) and `text_retrieval_accuracy` (caption ->
  an image of that caption)."""
  s, model = build(config, opts)
  length = int(opts.text_length)

  def tokens_of(batch):
    tokens = batch['tokens'].astype(jnp.int32)
    if tokens.shape[1] != length:
      raise ValueError(f'captions of {tokens.shape[1]} tokens; task_kwargs.text_length is '
                       f'{length}')
    return tokens

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, s.images(batch), tokens_of(batch),
                      train=False)

  def loss(variables, batch, rng):
    k_view, k_drop = jax.random.split(rng)
    tokens, x = tokens_of(batch), s.images(batch)
    if s.augment:
      x = s.views(k_view, x)
    state = [k for k in variables if k != 'params']
    (img, txt, log_scale), updates = model.apply(
        variables, x, tokens, train=True, method=_forward, rngs={'dropout': k_drop},
        mutable=state)
    value, logits, _ = contrastive_loss(img, txt, log_scale, None, s.axis_name)
    acc = caption_hits(logits, gather(tokens, s.axis_name)).mean()
    return value, ({'loss': value, 'retrieval_accuracy': acc,
                    'logit_scale': jnp.exp(log_scale)}, dict(updates))

  def evaluate(variables, batch):
    tokens = tokens_of(batch)
    img, txt = model.apply(variables, s.images(batch), tokens)
    sim = l2_normalize(img) @ l2_normalize(txt).T
    return {'retrieval_accuracy': caption_hits(sim, tokens),
            'text_retrieval_accuracy': caption_hits(sim.T, tokens)}

  def example_batch(batch_size):
    return {'image': s.example_batch(batch_size)['image'],
            'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  def features(variables, batch):
    return model.apply(variables, s.images(batch), train=False, method='image_representation')

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              preprocess=s.preprocess(), features=features)


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.captions not in ('templates', 'batch'):
    raise ConfigError(f"unknown captions {opts.captions!r}; valid: 'templates', 'batch'")
  if opts.captions == 'batch':
    return make_captioned(config, opts)
  s, model = build(config, opts)
  names = tuple(tuple(n) if isinstance(n, (tuple, list)) else (n,)
                for n in opts.class_names)
  train_templates = tuple(opts.train_templates)
  eval_templates = tuple(opts.eval_templates)
  if not train_templates or not eval_templates:
    raise ConfigError('multimodal.clip needs task_kwargs.train_templates and eval_templates')
  train_texts = {c for row in captions(train_templates, names) for c in row}
  leaked = sorted({c for row in captions(eval_templates, names) for c in row} & train_texts)
  if leaked:
    raise ConfigError(f'eval_templates make captions seen in training (zero-shot prompts '
                      f'must be held out): {", ".join(map(repr, leaked[:3]))}')
  length = int(opts.text_length)
  train_tokens = jnp.asarray(caption_table(train_templates, names, length))
  eval_tokens = jnp.asarray(caption_table(eval_templates, names, length))
  same_class = opts.same_class
  if same_class not in ('negatives', 'positives'):
    raise ConfigError(f"unknown same_class {same_class!r}; valid: 'negatives', 'positives'")

  def init(rng, batch):
    tokens = train_tokens[0, jnp.zeros_like(batch['label'])]
    return model.init({'params': rng, 'dropout': rng}, s.images(batch), tokens, train=False)

  def loss(variables, batch, rng):
    k_template, k_view, k_drop = jax.random.split(rng, 3)
    labels = batch['label']
    template = jax.random.randint(k_template, labels.shape, 0, len(train_templates))
    tokens = train_tokens[template, labels]
    x = s.images(batch)
    if s.augment:
      x = s.views(k_view, x)
    state = [k for k in variables if k != 'params']
    (img, txt, log_scale), updates = model.apply(
        variables, x, tokens, train=True, method=_forward, rngs={'dropout': k_drop},
        mutable=state)
    value, logits, all_labels = contrastive_loss(
        img, txt, log_scale, labels if same_class == 'positives' else None, s.axis_name)
    if all_labels is None:
      all_labels = gather(labels, s.axis_name)
    acc = (all_labels[logits.argmax(axis=1)] == all_labels).mean()
    return value, ({'loss': value, 'retrieval_accuracy': acc,
                    'logit_scale': jnp.exp(log_scale)}, dict(updates))

  def class_embeddings(m):
    n, k, t = eval_tokens.shape
    return zeroshot_classifier(m.encode_text(eval_tokens.reshape(n * k, t)).reshape(n, k, -1))

  def evaluate(variables, batch):
    def zeroshot(m, x):
      return zeroshot_logits(m.encode_image(x), class_embeddings(m), m.log_scale())
    logits_BK = model.apply(variables, s.images(batch), method=zeroshot)
    labels = batch['label']
    return {'zeroshot_accuracy': (logits_BK.argmax(axis=1) == labels).astype(jnp.float32),
            'zeroshot_loss': optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels)}

  def features(variables, batch):
    return model.apply(variables, s.images(batch), train=False, method='image_representation')

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=s.example_batch,
              preprocess=s.preprocess(), features=features)


# ---------------------------------------------------------------------------------------
# Named sizes
# ---------------------------------------------------------------------------------------

def _clip(embed, vision, text):
  vw, vd, vh, patch, size = vision
  tw, td, th = text
  return dict(embed_dim=embed,
              vision=dict(width=vw, depth=vd, num_heads=vh, mlp_dim=4 * vw, patch_size=patch,
                          image_size=size),
              text=dict(width=tw, depth=td, num_heads=th, mlp_dim=4 * tw, vocab_size=49408,
                        max_length=77))


# OpenAI's released sizes (HF openai/clip-vit-*): embed, (width, depth, heads, patch, image),
# (text width, depth, heads).
VARIANTS = {
    'B/32': _clip(512, (768, 12, 12, 32, 224), (512, 12, 8)),
    'B/16': _clip(512, (768, 12, 12, 16, 224), (512, 12, 8)),
    'L/14': _clip(768, (1024, 24, 16, 14, 224), (768, 12, 12)),
    'L/14-336': _clip(768, (1024, 24, 16, 14, 336), (768, 12, 12)),
}
# ALIGN (HF AlignConfig()): EfficientNet-B7 trunk (640 wide) + BERT-base, embeddings 640.
ALIGN_VARIANTS = {
    'B7-base': dict(embed_dim=640,
                    vision=dict(width_mult=2.0, depth_mult=3.1, head_ratio=0,
                                stochastic_depth=0.2, bn_epsilon=1e-3, bn_momentum=0.99),
                    text=dict(num_layers=12, num_heads=12, embed_dim=768, vocab_size=30522,
                              max_length=512, pretraining_heads=False)),
}
