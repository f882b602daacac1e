"""CLIP (Radford et al. 2021) on the offline digits: images paired with captions made from
their labels by templates, byte-level text. CLIP's own towers, small: the image tower a
ViT on 16x16 inputs in 4x4 patches (width 64, 4 layers, 4 heads), the text tower a causal
Transformer over bytes (width 64, 2 layers, 4 heads, 48 positions), embeddings of 64,
batch 128. Eval: zero-shot accuracy on the test split from prompts of held-out templates
(ensembled per class), and the linear probe and k-NN on the image tower's features.

  python -m train --config configs/clip_digits.py --workdir runs/clip_digits

Arguments: `variant=B/32|B/16|L/14|L/14-336` (OpenAI's sizes, 224x224 RGB (336 for
L/14-336) and a 49,408-word text vocabulary, of which the byte ids use 260: `train.summary`
prints HF CLIPModel's counts, 151,277,313 for B/32; not trained here), `image=vit|resnet`
(the digits image tower: CLIP's ViT, or arch/vision/resnet.py's TINY), `tiny` (tests).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average 9-10): 600 steps of batch 128 in 214 s wall (about 3.3 steps/s), final test
zero-shot accuracy 0.9833 (354/360; 0.9889 at step 300) from the six held-out templates,
linear probe 0.9833, k-NN 0.9806; 330,369 parameters (image tower 202,368, text tower
119,808, projections 2 x 4,096, logit scale 1); exp(logit_scale) 14.2 -> 12.8. With
`--config.task_kwargs.same_class=positives`: 0.9861 (0.9806 at step 300), 384 s at load 9.7.

`data=caption_shapes` (the text tower of configs/t2i_shapes.py): the captioned two-shape
scenes (train/datasets/caption_shapes.py, 32x32 RGB), each image paired with its own caption
(`task_kwargs.captions='batch'`: the 8 word ids, a 16-word vocabulary; pooled at the last
position); the ViT in 8x8 patches (16 tokens), batch 64, 500 steps. Eval on the test split
(1,000 scenes of compositions train never shows), per image within eval batches of 200:
`retrieval_accuracy` (its most similar caption is its own; several images of a batch may
share a caption) and `text_retrieval_accuracy` (a caption's most similar image carries it).
  python -m train --config configs/clip_digits.py:data=caption_shapes --workdir W
Measured 2026-12-07 (1 device, jit, fresh workdir /work/runs_t2i/clip): 500 steps in 7.0 min
wall (01:50:42-01:57:42 UTC, 1-minute load average 19.3 at the start and 20.3 at the end:
other agents' jobs on the 2 cores; 2.5-4.4 steps/s), 323,457 parameters. Test split:
retrieval_accuracy 0.476 / 0.524 at steps 250 / 500, text_retrieval_accuracy 0.525 / 0.603
(train batches of 64 at step 500: 0.783). Held-out compositions are harder than the
training ones, but the numbers are far above chance (about 1 / 125 for a guess among the
eval batch: 119-126 distinct captions in each batch of 200).
"""

from arch.multimodal import clip
from arch import vocab
from arch.vision import resnet
from configs import recipes
from train import config_lib, evaluators
from train.datasets import caption_shapes
from train.errors import UserError


def captioned(c, a):
  """`data=caption_shapes`: 32x32 RGB scenes, each paired with its own caption's word ids
  (8 positions, 0-padded; the tower pools the last position, which a causal tower lets
  see the whole caption); no labels, so no probes."""
  c.data.name = 'caption_shapes'
  c.task_kwargs.update(input_size=(32, 32), channels=3, captions='batch',
                       text_length=caption_shapes.MAX_TOKENS, class_names=(),
                       train_templates=(), eval_templates=())
  c.task_kwargs.text_model.update(vocab_size=len(caption_shapes.VOCAB),
                                  max_length=caption_shapes.MAX_TOKENS, eos_id=-1)
  c.model.update(image_size=32)
  for name in list(c.evals):  # the probes read labels
    del c.evals[name]
  c.eval_batch_size = 8 if a.tiny else 200
  if not a.tiny:
    c.model.update(patch_size=8)  # 4x4 patches: the scenes' two objects are 9-13 px wide
    c.batch_size = 64
    c.total_steps = 500
    c.eval_every = 250
    c.ckpt_every = 250


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='digits', image='vit', data='digits', tiny=False)
  if a.data not in ('digits', 'caption_shapes'):
    raise UserError(f"unknown data {a.data!r}; valid: digits, caption_shapes")
  if a.data == 'caption_shapes' and (a.variant != 'digits' or a.image != 'vit'):
    raise UserError('data=caption_shapes trains the small ViT pair (no variant, image=vit)')
  c = config_lib.base()
  recipes.digits(c, size=16)
  c.task = 'multimodal.clip'
  text = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, max_length=48, width=64, depth=2,
              num_heads=4, mlp_dim=256)
  c.task_kwargs = dict(input_size=(16, 16), channels=1, augment={}, embed_dim=64,
                       text_model_name='multimodal.clip:TextTransformer', text_model=text,
                       text_length=48, class_names=clip.DIGIT_NAMES,
                       train_templates=clip.DIGIT_TRAIN_TEMPLATES,
                       eval_templates=clip.DIGIT_EVAL_TEMPLATES,
                       same_class='negatives')
  c.model_name = 'multimodal.clip:VisionTransformer'
  c.model = dict(patch_size=4, image_size=16, width=64, depth=4, num_heads=4, mlp_dim=256,
                 num_classes=0)
  if a.image == 'resnet':
    c.model_name = 'vision.resnet'
    c.model = dict(resnet.TINY, num_classes=0)
  elif a.image != 'vit':
    raise UserError(f"unknown image tower {a.image!r}; valid: vit, resnet")
  c.evals.linear_probe = evaluators.entry('linear_probe')
  c.evals.knn = evaluators.entry('knn')
  c.batch_size = 128

  if a.tiny:
    c.model = (dict(resnet.TINY, stage_sizes=(1, 1), widths=(4, 8), stem_features=4,
                    num_classes=0) if a.image == 'resnet' else
               dict(c.model, width=16, depth=1, num_heads=2, mlp_dim=32))
    c.task_kwargs.text_model = dict(text, width=16, depth=1, num_heads=2, mlp_dim=32)
    c.task_kwargs.embed_dim = 8
    c.batch_size = 8
  elif a.variant in clip.VARIANTS:
    v = clip.VARIANTS[a.variant]
    size = v['vision']['image_size']
    c.model_name = 'multimodal.clip:VisionTransformer'
    c.model = dict(v['vision'], num_classes=0)
    c.task_kwargs.update(input_size=(size, size), channels=3, embed_dim=v['embed_dim'],
                         text_model=v['text'], text_length=v['text']['max_length'])
  elif a.variant != 'digits':
    raise UserError(f"unknown variant {a.variant!r}; valid: digits, {', '.join(clip.VARIANTS)}")

  c.total_steps = 600
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.1)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  if a.data == 'caption_shapes':
    captioned(c, a)
  return c
