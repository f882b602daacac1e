"""Input pipelines: TFDS ArrayRecord data sources read through grain, TensorFlow-free.

Every process reads only its slice of each global batch: for global batch `b` of size
B over P processes, process p reads shuffled examples [b*B + p*B/P, b*B + (p+1)*B/P).
The order of examples in a global batch is therefore the same for any number of
processes. The train iterator is a grain iterator whose state (the next batch index) is
saved with every checkpoint, so a resumed run sees exactly the batches it would have.
"""

import contextlib
import fcntl
import os
import sys

import grain
import numpy as np

from train.errors import UserError, close_matches

# Key of the eval batches' row mask: True for real examples, False for padding rows.
VALID = '_valid'


def default_data_dir() -> str:
  return (os.environ.get('ARCHZOO_DATA_DIR') or os.environ.get('TFDS_DATA_DIR')
          or os.path.expanduser('~/tensorflow_datasets'))


def offline_names():
  from train import datasets
  return sorted(datasets.OFFLINE)


@contextlib.contextmanager
def quiet_absl():
  """TFDS logs absl warnings (e.g. about unprepared folders) that our errors make redundant."""
  from absl import logging
  old = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(old)


@contextlib.contextmanager
def _file_lock(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # several processes of one run may share a data_dir
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def builder(name: str, data_dir: str | None = None, prepare: bool = True):
  """The TFDS builder of `name`, prepared. Offline builders are prepared on first use."""
  with quiet_absl():
    return _builder(name, data_dir, prepare)


def _builder(name, data_dir, prepare):
  import tensorflow_datasets as tfds
  from train import datasets
  data_dir = data_dir or default_data_dir()
  if name in datasets.OFFLINE:
    b = datasets.OFFLINE[name](data_dir=data_dir, file_format='array_record')
    if not b.is_prepared():
      if not prepare:
        raise UserError(f'dataset {name!r} is not prepared in {data_dir}; run '
                        f'`python -m train.datasets {name} --data_dir {data_dir}`')
      with _file_lock(os.path.join(data_dir, f'.{name}.lock')):
        b = datasets.OFFLINE[name](data_dir=data_dir, file_format='array_record')
        if not b.is_prepared():
          print(f'preparing offline dataset {name!r} in {data_dir} ...', file=sys.stderr)
          tfds.disable_progress_bar()
          b.download_and_prepare()
    return b
  try:
    b = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}{close_matches(name, offline_names())}; offline '
                    f'datasets: {", ".join(offline_names())}, or any TFDS catalogue name '
                    f'prepared in data_dir') from None
  if not b.is_prepared():
    raise UserError(
        f'dataset {name!r} is not prepared in {data_dir}; prepare it on a machine with its '
        f'source data: `tfds build {name} --data_dir {data_dir} --file_format array_record` '
        f'(then copy the folder here), or set config.data.data_dir to where it is')
  fmt = str(getattr(b.info, 'file_format', '') or '')
  if fmt and 'array_record' not in fmt:
    raise UserError(f'dataset {name!r} in {data_dir} is stored as {fmt}; grain needs '
                    f'ArrayRecord: rebuild it with --file_format array_record')
  return b


def source(data_cfg, split: str):
  """The random-access source of `split`: a split name, or a TFDS slice of one
  ('train[:50]', 'train[10%:]')."""
  b = builder(data_cfg.name, data_cfg.get('data_dir') or None)
  if split.split('[')[0] not in b.info.splits:
    raise UserError(f'dataset {data_cfg.name!r} has no split {split!r}; '
                    f'splits: {", ".join(b.info.splits)}')
  return b.as_data_source(split)


_TEXT_CACHE = {}


def records(config, split: str, workdir: str | None = None):
  """The examples of `split` the task sees: the TFDS source, or its tokenized view when
  `config.data.tokenizer` is set (see train/text.py; cached per split and workdir)."""
  from train import text
  src = source(config.data, split)
  if not text.enabled(config):
    return src
  key = (split, workdir, repr(sorted(config.data.to_dict().items())))
  if key not in _TEXT_CACHE:
    tok = text.tokenizer(config, workdir,
                         train_source=lambda: source(config.data, config.data.train_split))
    _TEXT_CACHE[key] = text.tokenized_source(config, src, tok)
  return _TEXT_CACHE[key]


def stack(examples):
  """Stacks a list of example dicts; drops non-numeric features (e.g. raw text bytes)."""
  out = {}
  for key in examples[0]:
    value = np.stack([np.asarray(e[key]) for e in examples])
    if value.dtype.kind in 'biuf':
      out[key] = value
  return out


class _HostBatches(grain.MapDataset):
  """Batch `i` of this process: its contiguous slice of global batch `i` of `parent`,
  stacked, or with `collate` split into `shards` equal groups, each collated, the groups
  stacked on a new leading axis (the row mask then has shape (shards, group size))."""

  def __init__(self, parent, global_batch: int, num_batches: int, process_index: int,
               process_count: int, pad_to: int | None = None, collate=None, shards: int = 1):
    super().__init__(parent)
    self._global = global_batch
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self._num_batches = num_batches
    self._pad_to = pad_to  # number of real examples; indices beyond are padding
    self._collate, self._shards = collate, shards
    if collate is not None and self._local % shards:
      raise UserError(f'a batch of {self._local} examples per process does not split into '
                      f'{shards} shards of equal size for the task\'s collate')

  def __len__(self):
    return self._num_batches

  def __str__(self):
    return f'_HostBatches(global={self._global}, local={self._local}, offset={self._offset})'

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    start = index * self._global + self._offset
    ids = np.arange(start, start + self._local)
    mask = None if self._pad_to is None else ids < self._pad_to
    if mask is None:
      examples = [self._parent[int(i)] for i in ids]
    else:  # padding rows repeat example 0
      examples = [self._parent[int(i) if m else 0] for i, m in zip(ids, mask)]
    if self._collate is None:
      batch = stack(examples)
    else:
      size = self._local // self._shards
      batch = stack([self._collate(examples[s * size:(s + 1) * size])
                     for s in range(self._shards)])
      if mask is not None:
        mask = mask.reshape(self._shards, size)
    if mask is not None:
      batch[VALID] = mask
    return batch


def train_iterator(config, preprocess=None, process_index: int = 0, process_count: int = 1,
                   workdir: str | None = None, collate=None, shards: int = 1):
  """An endless grain iterator of this process's train batches, shuffled every epoch
  (with `collate`: see _HostBatches)."""
  data_cfg = config.data
  ds = grain.MapDataset.source(records(config, data_cfg.train_split, workdir))
  if data_cfg.get('shuffle', True):
    ds = ds.shuffle(seed=config.seed)
  ds = ds.repeat()  # reshuffles each epoch
  if preprocess is not None:
    ds = ds.map(preprocess)
  batches = _HostBatches(ds, config.batch_size, sys.maxsize // config.batch_size,
                         process_index, process_count, collate=collate, shards=shards)
  options = grain.ReadOptions(num_threads=int(data_cfg.get('num_threads', 2)),
                              prefetch_buffer_size=int(data_cfg.get('prefetch', 4)))
  return iter(batches.to_iter_dataset(options))


def task_train_input(config, task, shards: int, process_index: int = 0,
                     process_count: int = 1, workdir: str | None = None):
  """A task's train input: its own (`Task.input`), or the config's dataset through its
  preprocess and, where it has one, its collate into `shards` groups per process."""
  if task.input is not None:
    return task.input(process_index, process_count)
  return train_iterator(config, task.preprocess, process_index, process_count, workdir,
                        **collation(task, shards))


def collation(task, shards: int) -> dict:
  """The collate keyword arguments of the input pipeline for `task` (none without one)."""
  return {} if task.collate is None else {'collate': task.collate, 'shards': shards}


def eval_batches(config, split: str, preprocess=None, process_index: int = 0,
                 process_count: int = 1, workdir: str | None = None, collate=None,
                 shards: int = 1):
  """One deterministic pass over `split`, padded to full batches; `_valid` marks real rows."""
  src = records(config, split, workdir)
  ds = grain.MapDataset.source(src)
  if preprocess is not None:
    ds = ds.map(preprocess)
  size = config.get('eval_batch_size') or config.batch_size
  n = len(src)
  return _HostBatches(ds, size, -(-n // size), process_index, process_count, pad_to=n,
                      collate=collate, shards=shards)
