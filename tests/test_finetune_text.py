"""Downstream fine-tuning of the text encoders: the labels of `pydoc_chapters` (docs file of a
passage), `pydoc_chapters_order` (word order kept or shuffled), `pydoc_chapters_spell` (words'
inner letters kept or shuffled) and `pydoc_code` (tokenize's lexical tags), the classifier and
tagger heads through the loop with exact resume, and `config.init_from` copying a bert_pydoc /
bart_pydoc / t5_pydoc run's encoder."""

import jax
import numpy as np
import pytest

from arch import vocab
from arch.sequence import encoder_heads
from conftest import check_resumes_alike, load_config, train_spec
from train.datasets import pydoc_chapters, pydoc_code

O, I, K, S, N, C = range(6)  # pydoc_code.TAGS
_ = -1  # untagged (whitespace)


def test_byte_tags_follow_tokenize():
  code = "if x1 == 0x1F:  # ok\n    s = rb'a\\n' + f\"{y}\"\nelse: é = None\n"
  want = ([K, K, _, I, I, _, O, O, _, N, N, N, N, O, _, _, C, _, C, C, _]
          + [_] * 4 + [I, _, O, _] + [S] * 7 + [_, O, _] + [S] * 6 + [_]
          + [K] * 4 + [O, _] + [I, I] + [_, O, _] + [K] * 4 + [_])  # 'é' is two bytes
  got = pydoc_code.byte_tags(code)
  assert len(got) == len(code.encode('utf-8'))
  np.testing.assert_array_equal(got, want)
  # A string spanning lines is one string token; soft keywords are identifiers.
  np.testing.assert_array_equal(pydoc_code.byte_tags('match = """a\nb"""\n'),
                                [I] * 5 + [_, O, _] + [S] * 4 + [_] + [S] * 4 + [_])


def test_snippets_keep_code_and_drop_grammar_and_prose():
  help_text = ('The "for" statement\n\n'
               '   for_stmt ::= "for" target_list "in" expression_list ":" suite\n\n'
               'Prose about it:\n\n'
               '   for i in range(3):\n       print(i)\n\n'
               '   Called to implement the built-in function "len()".\n\n'
               '      x = [1, 2]\n\n'
               '   >>> a = 1\n   >>> a\n   1\n   >>> def f():\n   ...     return 2\n   ...\n')
  assert pydoc_code.snippets(help_text) == [
      'for i in range(3):\n    print(i)', 'x = [1, 2]', 'a = 1\na\ndef f():\n    return 2\n']


def test_windows_cut_at_line_ends_and_keep_the_snippet_tags():
  code = ''.join(f'value_{i} = {i}  # number {i}\n' for i in range(12))
  tags = pydoc_code.byte_tags(code)
  parts = pydoc_code.windows(code)
  assert len(parts) > 1 and b''.join(d for d, _ in parts) == code.encode()
  assert all(len(d) <= pydoc_code.LENGTH - 2 and d.endswith(b'\n') for d, _ in parts)
  np.testing.assert_array_equal(np.concatenate([t for _, t in parts]), tags)
  ex = pydoc_code.example(*parts[0])
  n = len(parts[0][0])
  assert ex['tokens'][0] == vocab.BOS and ex['tokens'][n + 1] == vocab.EOS
  assert bytes((ex['tokens'][1:n + 1] - vocab.NUM_SPECIAL).astype(np.uint8)) == parts[0][0]
  assert (ex['tags'][[0, n + 1]] == -1).all() and (ex['tags'][n + 2:] == -1).all()
  np.testing.assert_array_equal(ex['tags'][1:n + 1], parts[0][1])


def test_chapter_texts_dedupe_and_drop_shared_paragraphs():
  docs = {'if': 'The if statement\n\nshared grammar',
          'compound': 'Compound\n\nThe if statement\n\nloops',
          'assert': 'The assert statement\n\nshared grammar',
          'unknown-topic': 'ignored'}
  texts = pydoc_chapters.chapter_texts(docs)
  assert texts['reference/compound_stmts'] == [('Compound', 'compound'),
                                               ('The if statement', 'compound'),
                                               ('loops', 'compound')]
  assert texts['reference/simple_stmts'] == [('The assert statement', 'assert')]
  assert texts['library/pdb'] == []
  # Every help() topic of this Python is in exactly one chapter.
  from pydoc_data import topics
  named = [t for names in pydoc_chapters.CHAPTERS.values() for t in names]
  assert len(named) == len(set(named)) and set(named) == set(topics.topics)


def test_passages_and_the_held_out_blocks():
  paragraphs = [('a' * 200, 'one'), ('b' * 100, 'two')]
  out = pydoc_chapters.passages(paragraphs)
  assert b''.join(p for p, _ in out) == b'a' * 200 + b'\n\n' + b'b' * 100 + b'\n\n'
  assert [len(p) for p, _ in out] == [126, 126, 52]
  assert [t for _, t in out] == ['one', 'one', 'two']  # the paragraph a passage starts in
  assert [i for i in range(45) if pydoc_chapters.is_test(i)] == [16, 17, 18, 19, 36, 37, 38, 39]
  tokens = pydoc_chapters.byte_tokens('é!'.encode())
  assert list(tokens[:5]) == [vocab.BOS, 0xC3 + 4, 0xA9 + 4, ord('!') + 4, vocab.EOS]
  assert tokens.shape == (pydoc_chapters.LENGTH,) and not tokens[5:].any()


def test_order_task_shuffles_words_and_keeps_the_bytes():
  """pydoc_chapters_order: the negative copy holds the same words, never in their order."""
  from train.datasets import pydoc_chapters_order
  rng = np.random.default_rng(0)
  for data in (b'a b', b'one two three four', b'x  y z\n\nw'):
    out = pydoc_chapters_order.shuffle_words(data, rng)
    assert out != data and sorted(out.split(b' ')) == sorted(data.split(b' '))
    assert sorted(out) == sorted(data)  # the same bytes: no bag of bytes can tell them apart


def test_spell_task_scrambles_inner_letters_and_keeps_the_bytes():
  """pydoc_chapters_spell: each word with all-letter insides keeps its ends and its letters;
  other words, the spaces and the bag of bytes stay as they are."""
  from train.datasets import pydoc_chapters_spell
  rng = np.random.default_rng(0)
  data = b'the attribute "__init__" x1 of *name*, spelled\n  correctly'
  outs = {pydoc_chapters_spell.scramble_words(data, rng) for _ in range(20)}
  for out in outs:
    assert sorted(out) == sorted(data)  # the same bytes: no bag of bytes can tell them apart
    for w, v in zip(data.split(b' '), out.split(b' ')):
      assert len(v) == len(w) and v[:1] == w[:1] and v[-1:] == w[-1:]
      assert sorted(v) == sorted(w)
      if len(w) < 4 or not w[1:-1].isalpha():  # 'the', '"__init__"', 'x1', '*name*,'
        assert v == w
  assert {o.split(b' ')[1] for o in outs} != {b'attribute'}  # scrambled, not always alike


def test_classification_eval_reports_each_class():
  from train import core
  task = core.load_task(load_config('bert_classify_pydoc.py:init=scratch,tiny'))
  sums = {'loss': 6.0, 'accuracy': 3.0, 'class_count': np.array([2.0, 2.0] + [0.0] * 7),
          'class_correct': np.array([2.0, 1.0] + [0.0] * 7)}
  got = task.finalize_eval(sums, 4)
  assert got['accuracy'] == 0.75 and got['loss'] == 1.5
  assert got['recall_0'] == 1.0 and got['recall_1'] == 0.5 and 'recall_2' not in got
  assert got['balanced_accuracy'] == 0.75


SMALL = dict(model__encoder__num_layers=1, model__encoder__embed_dim=32,
             model__encoder__num_heads=2)


@pytest.mark.parametrize('spec,metric', [('bert_classify_pydoc.py:init=scratch,tiny', 'accuracy'),
                                         ('bert_tag_pydoc.py:init=scratch,tiny', 'accuracy')])
def test_heads_train_through_the_loop_and_resume_exactly(spec, metric, tmp_path, data_dir):
  def train(workdir, data__data_dir=data_dir, **kw):
    return train_spec(spec, workdir, data__data_dir, **{**SMALL, 'total_steps': 4, 'log_every': 1,
                                                        'ckpt_every': 2, 'eval_every': 4, **kw})
  final = train(tmp_path / 'straight')
  assert 0.0 <= final[metric] <= 1.0 and np.isfinite(final['loss'])
  check_resumes_alike(spec, train, tmp_path, must_have=('loss', metric),
                      data__data_dir=data_dir, **SMALL)


def _leaves(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_init_from_loads_the_pretrained_encoder(tmp_path, data_dir):
  """A 2-step bert_pydoc run's encoder (embeddings, blocks, pooler) is the classifier's
  and the tagger's encoder at step 0; their heads keep the fresh initialisation."""
  from train import core, loop
  src = tmp_path / 'bert'
  source = dict(model__num_layers=1, model__embed_dim=32, model__num_heads=2)
  train_spec('bert_pydoc.py:variant=tiny', src, data_dir, total_steps=2, eval_every=0,
             log_every=2, ckpt_every=2, **source)
  trained, _ = core.restore_state(load_config('bert_pydoc.py:variant=tiny', **source), str(src))
  want = _leaves(trained.params)
  for spec in ('bert_classify_pydoc.py', 'bert_tag_pydoc.py'):
    pairs = encoder_heads.bert_init_from(1)
    states = []
    for name, extra in (('tuned', dict(init_from__source=pairs['source'],
                                       init_from__target=pairs['target'])), ('fresh', {})):
      args = f'src={src},tiny' if name == 'tuned' else 'init=scratch,tiny'
      config = load_config(f'{spec}:{args}', data__data_dir=data_dir, **SMALL, **extra)
      workdir = str(tmp_path / f'{spec}_{name}')
      loop.prepare_runs(config, workdir)
      run = loop.Run(config, workdir)
      run.close()
      states.append(_leaves(run.state.params))
    tuned, fresh = states
    encoder = {k[len('encoder/'):]: v for k, v in tuned.items() if k.startswith('encoder/')}
    assert set(encoder) == {k for k in want if not k.startswith(('mlm_', 'nsp'))}
    for k, v in encoder.items():
      np.testing.assert_array_equal(v, want[k])
      assert not np.array_equal(v, fresh['encoder/' + k]) or not v.any()
    for k in ('head/kernel', 'head/bias'):
      np.testing.assert_array_equal(tuned[k], fresh[k])


@pytest.mark.parametrize('family', ['bart', 't5'])
def test_init_from_loads_the_encoder_half_not_the_decoder(family, tmp_path, data_dir):
  """bart_classify_pydoc and t5_classify_pydoc: a 2-step bart_pydoc / t5_pydoc run's shared
  embedding and encoder stack (T5's with its relative position bias and final norm) are the
  classifier's encoder at step 0; the decoder makes no params there."""
  from train import core, loop
  src = tmp_path / family
  train_spec(f'{family}_pydoc.py:variant=tiny', src, data_dir, total_steps=2, eval_every=0,
             log_every=2, ckpt_every=2)
  source = load_config(f'{family}_pydoc.py:variant=tiny')
  trained, _ = core.restore_state(source, str(src))
  want = _leaves(trained.params)
  encoder = {f'model__encoder__{k}': v for k, v in source.model.items() if k != 'dropout_rate'}
  config = load_config(f'{family}_classify_pydoc.py:src={src},tiny', data__data_dir=data_dir,
                       **encoder)
  loop.prepare_runs(config, str(tmp_path / 'cls'))
  run = loop.Run(config, str(tmp_path / 'cls'))
  run.close()
  got = _leaves(run.state.params)
  assert {k for k in got if not k.startswith('encoder/')} == {'head/kernel', 'head/bias'}
  assert {k[len('encoder/'):] for k in got if k.startswith('encoder/')} == {
      k for k in want if k.startswith(('shared/', 'encoder/'))}
  for k, v in got.items():
    if k.startswith('encoder/'):
      np.testing.assert_array_equal(v, want[k[len('encoder/'):]])


def test_head_lr_scale_is_the_same_layer_with_a_larger_adam_step():
  """head_lr_scale=s: the same initial logits, the encoder's first Adam step unchanged, and
  the new layer's weights (s x its params) moving s times as far."""
  import flax.linen as nn
  import optax
  tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (4, 12), vocab.NUM_SPECIAL, 60))
  labels = np.array([0, 1, 2, 1])
  encoder = dict(vocab_size=260, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                 max_length=16, dropout_rate=0.0)
  moved = {}
  for s in (1.0, 10.0):
    model = encoder_heads.Classifier(num_classes=3, encoder=encoder, pool='mean',
                                     dropout_rate=0.0, head_lr_scale=s)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), tokens)['params'])
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, tokens), labels).mean()
    tx = optax.adam(1e-3)
    updates, _ = tx.update(jax.grad(loss)(params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    moved[s] = (model.apply({'params': params}, tokens), _leaves(params), _leaves(new))
  (logits1, p1, n1), (logits10, p10, n10) = moved[1.0], moved[10.0]
  np.testing.assert_allclose(logits10, logits1, rtol=1e-5, atol=1e-7)
  assert set(p10) == set(p1) and {'head/kernel', 'head/bias'} <= set(p1)
  for k in p1:  # Adam steps the stored params alike (its step ignores the gradient's scale)
    np.testing.assert_allclose(n10[k] - p10[k], n1[k] - p1[k], atol=1e-6)
    if not k.startswith('encoder/'):  # and the layer's weights are 10 x its params
      np.testing.assert_allclose(10 * p10[k], p1[k], rtol=1e-5, atol=1e-9)
  assert np.abs(n1['head/kernel'] - p1['head/kernel']).min() > 5e-4  # every weight moved
