"""Token-id conventions every text tokenizer and sequence objective share.

Ids 0-3 are special in every tokenizer (`train/text.py`): padding, beginning and end of
sequence, and the mask token of masked-LM and denoising objectives. The byte-level
tokenizer maps byte b to id b + NUM_SPECIAL.
"""

PAD = 0
BOS = 1
EOS = 2
MASK = 3
NUM_SPECIAL = 4
SPECIAL_TOKENS = ('<pad>', '<s>', '</s>', '<mask>')
BYTE_VOCAB_SIZE = 256 + NUM_SPECIAL


def tokenizer_size(data_config) -> int:
  """The most ids the config's text stage can produce (`data.tokenizer`): the byte
  tokenizer's BYTE_VOCAB_SIZE, or the BPE's `data.vocab_size`; 0 without a tokenizer."""
  kind = data_config.get('tokenizer') or ''
  if kind == 'byte':
    return BYTE_VOCAB_SIZE
  if kind == 'bpe':
    return int(data_config.get('vocab_size') or 0)
  return 0


def check_model(config) -> None:
  """A ConfigError when the network's embeddings (`config.model` vocab_size,
  src_vocab_size, tgt_vocab_size) cannot hold every id of the config's tokenizer: an id
  past the table is not an error inside jit, it silently reads a clamped row. Text tasks
  call it from `make`."""
  from arch.task import ConfigError
  need = tokenizer_size(config.data)
  model = config.get('model') or {}
  for key in ('vocab_size', 'src_vocab_size', 'tgt_vocab_size'):
    size = model.get(key)
    if size is not None and need and int(size) < need:
      raise ConfigError(f'config.model.{key}={size} is smaller than the '
                        f'{config.data.tokenizer} tokenizer\'s {need} ids')


def word_ids(prompt, words, length: int):
  """Word ids (length,) int32 of a caption in a closed word vocabulary (`words[i]` is id i;
  id 0 pads): a string, split on spaces and lower-cased, or a list of ids; 0-padded. A
  ConfigError (one line, naming the vocabulary) for a word outside `words`, an id outside
  it, or a caption of no words or more than `length`. The prompts of the text-to-image
  families of caption_shapes (arch/generative/dalle.py, mmdit.py)."""
  import numpy as np
  from arch.task import ConfigError
  if isinstance(prompt, str):
    said = prompt.lower().split()
    unknown = [w for w in said if w not in words[1:]]
    if unknown:
      raise ConfigError(f'prompt words {", ".join(map(repr, unknown))} are not in the '
                        f'vocabulary: {", ".join(words[1:])}')
    ids = [list(words).index(w) for w in said]
  else:
    ids = [int(i) for i in prompt]
    if any(not 0 < i < len(words) for i in ids):
      raise ConfigError(f'prompt ids {ids} are outside the vocabulary of {len(words)} words')
  if not ids or len(ids) > length:
    raise ConfigError(f'a prompt has 1 to {length} words, got {len(ids)}: {prompt!r}')
  return np.array(ids + [0] * (length - len(ids)), np.int32)
