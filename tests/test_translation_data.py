"""The procedural translation dataset: sizes, determinism, disjoint splits, right answers.

Pairs are checked against readers written here, independently of the builder: strptime
for dates and a small word-number parser for numbers.
"""

import collections
import datetime
import re

import pytest

from conftest import run_cli
from train import data as data_lib
from train.datasets import translation

SIZES = {'train': 50_000, 'validation': 1_000, 'test': 2_000}
DATE_FORMATS = ('%B %d, %Y', '%d %B %Y', '%b %d, %Y', '%d %b %Y', '%A, %d %B %Y',
                '%a %b %d %Y', 'the %d of %B %Y', '%d-%b-%Y')
UNITS = ('zero one two three four five six seven eight nine ten eleven twelve thirteen '
         'fourteen fifteen sixteen seventeen eighteen nineteen').split()
TENS = 'twenty thirty forty fifty sixty seventy eighty ninety'.split()
VALUE = {**{w: i for i, w in enumerate(UNITS)}, **{w: 10 * i for i, w in enumerate(TENS, 2)}}
WEEKDAYS = {datetime.date(2024, 1, d).strftime(f): d for d in range(1, 8) for f in ('%A', '%a')}


def words_value(text):
  """The number English words name ('forty-two thousand and seven' -> 42007)."""
  total = part = 0
  for w in text.replace('-', ' ').split():
    if w == 'hundred':
      part *= 100
    elif w == 'thousand':
      total, part = total + part * 1000, 0
    elif w != 'and':
      part += VALUE[w]
  return total + part


def date_value(text):
  """The date a source names, read by strptime; weekday names and ordinals must be right."""
  for d, suffix in re.findall(r'\b(\d+)(st|nd|rd|th)\b', text):
    assert suffix == {1: 'st', 2: 'nd', 3: 'rd', 21: 'st', 22: 'nd', 23: 'rd', 31: 'st'}.get(
        int(d), 'th'), text
  plain = re.sub(r'(\d)(st|nd|rd|th)\b', r'\1', text)
  for fmt in DATE_FORMATS:
    try:
      day = datetime.datetime.strptime(plain, fmt).date()
    except ValueError:
      continue
    first = text.split()[0].rstrip(',')
    if first in WEEKDAYS:
      assert first in (day.strftime('%A'), day.strftime('%a')), text
    return day
  raise AssertionError(f'not a date: {text!r}')


def content(source, target):
  """('date', day) or ('number', n) of one pair, after checking its target is right."""
  if re.search('[A-Z]', source):  # dates always name a month
    day = date_value(source)
    assert target == day.isoformat(), (source, target)
    return 'date', day
  if re.fullmatch(r'[0-9,]+', source):  # digits to American words
    n = int(source.replace(',', ''))
    assert source in (str(n), f'{n:,}') and words_value(target) == n, (source, target)
    assert ' and ' not in target and not re.search(
        rf'\b({"|".join(TENS)}) ({"|".join(UNITS[1:10])})\b', target), target
    return 'number', n
  n = words_value(source)
  assert target == str(n), (source, target)
  return 'number', n


def read(builder):
  """{split: [(source, target)]} in stored order, as str."""
  out = {}
  for split in builder.info.splits:
    ds = builder.as_data_source(split)
    out[split] = [(ex['source'].decode(), ex['target'].decode())
                  for ex in ds.__getitems__(list(range(len(ds))))]
  return out


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
  """The dataset prepared through `python -m train.datasets translation`."""
  d = str(tmp_path_factory.mktemp('translation'))
  proc = run_cli(['translation', '--data_dir', d], d, module='train.datasets')
  assert proc.returncode == 0, proc.stderr
  return read(data_lib.builder('translation', d, prepare=False))


def test_split_sizes_and_max_lengths(pairs):
  assert {k: len(v) for k, v in pairs.items()} == SIZES
  every = [p for v in pairs.values() for p in v]
  assert all(s.isascii() and t.isascii() for s, t in every)
  assert max(len(s) for s, _ in every) <= translation.MAX_SOURCE_LEN == 54
  assert max(len(t) for _, t in every) <= translation.MAX_TARGET_LEN == 50
  # the bounds are tight over all content (the longest strings are numbers)
  numbers = range(translation.MAX_NUMBER + 1)
  assert max(len(translation.number_words(n, british=True)) for n in numbers) == 54
  assert max(len(translation.number_words(n)) for n in numbers) == 50
  days = [datetime.date(1997, 1, 1) + datetime.timedelta(i) for i in range(365)]
  longest = max((translation.date_text(d, f) for d in days
                 for f in range(len(translation.DATE_FORMS))), key=len)
  assert longest == 'Wednesday, 10 September 1997'


def test_two_builds_are_identical(pairs, tmp_path):
  # the same examples in the same stored order (the ArrayRecord bytes may differ)
  assert read(data_lib.builder('translation', str(tmp_path))) == pairs  # this build in-process
  for split in SIZES:
    assert sorted(translation.generate(split)) == sorted(pairs[split])


def test_every_pair_is_right_and_splits_share_no_content(pairs):
  held = {split: {content(s, t) for s, t in v} for split, v in pairs.items()}
  sources = {split: {s for s, _ in v} for split, v in pairs.items()}
  for a, b in (('train', 'validation'), ('train', 'test'), ('validation', 'test')):
    assert not sources[a] & sources[b], (a, b)
    assert not held[a] & held[b], (a, b)  # no date or number of one split is in another
  assert len(sources['validation']) == 1_000 and len(sources['test']) == 2_000
  for split in ('validation', 'test'):
    assert all(v >= 1000 for k, v in held[split] if k == 'number')
  # the task mix: dates 40%, words to digits 30%, digits to words 30%
  train = collections.Counter(
      'date' if re.search('[A-Z]', s) else 'digits' if s[0].isdigit() else 'words'
      for s, _ in pairs['train'])
  assert abs(train['date'] / 50_000 - 0.4) < 0.02
  assert abs(train['words'] / 50_000 - 0.3) < 0.02
  assert abs(train['digits'] / 50_000 - 0.3) < 0.02


@pytest.mark.parametrize('n,american,british', [
    (0, 'zero', 'zero'),
    (7, 'seven', 'seven'),
    (40, 'forty', 'forty'),
    (105, 'one hundred five', 'one hundred and five'),
    (611, 'six hundred eleven', 'six hundred and eleven'),
    (1090, 'one thousand ninety', 'one thousand and ninety'),
    (12019, 'twelve thousand nineteen', 'twelve thousand and nineteen'),
    (42007, 'forty-two thousand seven', 'forty-two thousand and seven'),
    (90000, 'ninety thousand', 'ninety thousand'),
    (77777, 'seventy-seven thousand seven hundred seventy-seven',
     'seventy-seven thousand seven hundred and seventy-seven'),
    (99999, 'ninety-nine thousand nine hundred ninety-nine',
     'ninety-nine thousand nine hundred and ninety-nine'),
])
def test_number_words(n, american, british):
  assert translation.number_words(n) == american
  assert translation.number_words(n, british=True) == british
  assert words_value(american) == words_value(british) == n


def test_date_forms():
  day = datetime.date(1997, 3, 3)  # a Monday
  assert [translation.date_text(day, f) for f in range(len(translation.DATE_FORMS))] == [
      'March 3, 1997', '3 March 1997', 'Mar 3, 1997', '3 Mar 1997', 'Monday, 3 March 1997',
      'Mon Mar 3 1997', 'the 3rd of March 1997', 'March 3rd, 1997', '03-Mar-1997']
  assert [translation.ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 30, 31)] == [
      '1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd', '23rd', '30th',
      '31st']
  assert translation.date_text(datetime.date(2000, 2, 29), 8) == '29-Feb-2000'
  assert translation.date_text(datetime.date(2099, 12, 31), 4) == 'Thursday, 31 December 2099'
