"""Offline TFDS builders and the grain pipelines over them."""

import numpy as np
import ml_collections
import pytest

from train import data as data_lib


def _config(data_dir, **kw):
  return ml_collections.ConfigDict(dict(
      seed=0, batch_size=kw.pop('batch_size', 32), eval_batch_size=0,
      data=dict(name=kw.pop('name', 'digits'), train_split='train', eval_split='test',
                data_dir=data_dir, shuffle=True, num_threads=2, prefetch=2), **kw))


def test_digits_split_is_fixed_disjoint_and_complete(data_dir):
  from sklearn.datasets import load_digits
  b = data_lib.builder('digits', data_dir)
  train, test = b.as_data_source('train'), b.as_data_source('test')
  assert (len(train), len(test)) == (1437, 360)
  ref = load_digits()
  ref_images = np.round(ref.images * 255 / 16).astype(np.uint8)
  key = lambda img: img.tobytes()
  index = {key(img): i for i, img in enumerate(ref_images)}
  train_ids = {index[key(train[i]['image'][..., 0])] for i in range(len(train))}
  test_ids = {index[key(test[i]['image'][..., 0])] for i in range(len(test))}
  # (a few digits images are exact duplicates of each other, so compare by count too)
  assert len(train_ids & test_ids) <= 2 and len(train_ids | test_ids) >= 1790
  ex = test[0]
  i = index[key(ex['image'][..., 0])]
  assert ex['label'] == ref.target[i] and ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8


def test_pydoc_text_splits_by_document(data_dir):
  from pydoc_data import topics
  b = data_lib.builder('pydoc_text', data_dir)
  train, val = b.as_data_source('train'), b.as_data_source('validation')
  t = {train[i]['topic'] for i in range(len(train))}
  v = {val[i]['topic'] for i in range(len(val))}
  assert not t & v and len(v) >= 1
  assert {x.decode() for x in t | v} == set(topics.topics)
  ex = val[0]
  assert ex['text'].decode() == topics.topics[ex['topic'].decode()]


def test_train_iterator_resumes_exactly_and_reshuffles_each_epoch(data_dir):
  config = _config(data_dir, batch_size=100)
  it = data_lib.train_iterator(config)
  for _ in range(5):
    next(it)
  state = it.get_state()
  assert state == {'next_index': 5}
  after = [next(it)['label'] for _ in range(30)]  # crosses epochs (1437 examples)
  it2 = data_lib.train_iterator(config)
  it2.set_state(state)
  np.testing.assert_array_equal(np.concatenate([next(it2)['label'] for _ in range(30)]),
                                np.concatenate(after))
  # the first 14 batches (1400 examples) are distinct examples of one epoch
  it3 = data_lib.train_iterator(config)
  images = np.concatenate([next(it3)['image'] for _ in range(14)])
  assert len({img.tobytes() for img in images}) >= 1390  # digits has a few duplicate images


def test_eval_batches_cover_the_split_once_with_a_mask(data_dir):
  config = _config(data_dir, batch_size=64)
  batches = data_lib.eval_batches(config, 'test')
  assert len(batches) == 6  # ceil(360 / 64)
  masks = np.concatenate([batches[i]['_valid'] for i in range(len(batches))])
  assert masks.sum() == 360 and masks[:360].all() and not masks[360:].any()


def test_unknown_and_unprepared_datasets_fail_clearly(data_dir):
  from train.errors import UserError
  with pytest.raises(UserError, match="unknown dataset 'digitz' .did you mean digits"):
    data_lib.builder('digitz', data_dir)
  with pytest.raises(UserError, match="'mnist' is not prepared.*tfds build mnist"):
    data_lib.builder('mnist', data_dir)
  with pytest.raises(UserError, match="no split 'dev'"):
    data_lib.source(_config(data_dir).data, 'dev')
