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
