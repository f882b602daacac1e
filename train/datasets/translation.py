"""Procedural translation between two renderings of the same content, as a TFDS builder.

Each example is a `source` and a `target` string (ASCII, so characters are bytes) of one
of three kinds, told apart by the source alone (no task tag):

  date to ISO (40%)             'March 3, 1997'                -> '1997-03-03'
                                'Wednesday, 9 July 2031'       -> '2031-07-09'
                                'the 21st of September 1904'   -> '1904-09-21'
                                'Sun Jul 20 1969', '29-Feb-2000'
  number words to digits (30%)  'forty-two thousand and seven' -> '42007'
                                'six hundred eleven'           -> '611'
  digits to number words (30%)  '90,015'                       -> 'ninety thousand fifteen'

Dates run from 1900-01-01 to 2099-12-31 in 9 forms (full or 3-letter month and weekday
names, ordinal days, '03-Mar-1997'; never all-numeric, so never ambiguous). Numbers run
from 0 to 99,999: targets are American English (hyphenated tens, no 'and'); sources are
that or British (with 'and'), or digits with or without a thousands comma. Sources are at
most 54 bytes and targets at most 50 (a byte-level model of length 64 fits either with BOS
and EOS). The metric is exact match of the whole target string.

Splits: 50,000 train, 1,000 validation and 2,000 test examples, drawn with numpy from
fixed seeds. They are split by content, not by string: a fixed 10% of the days and of the
numbers 1,000..99,999 are held out of train, a third of them for validation and the rest
for test, so every validation and test example asks for a date or a number that train
never shows in any form or direction (0..999, the number vocabulary, is train only).
Sources are distinct within validation and within test.
"""

import datetime
import functools

import numpy as np
import tensorflow_datasets as tfds

SPLITS = {'train': (50_000, 1), 'validation': (1_000, 2), 'test': (2_000, 3)}  # (count, seed)
TASKS = ('date', 'words', 'digits')  # the source kind: date, number in words, in digits
TASK_P = (0.4, 0.3, 0.3)
MAX_SOURCE_LEN, MAX_TARGET_LEN = 54, 50  # bytes; test_translation_data checks them

FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
MAX_NUMBER = 99_999
HELD_OUT = 0.1   # fraction of days, and of numbers >= HELD_OUT_FROM, not in train
HELD_OUT_FROM = 1000
DIGITS_P = (0.05, 0.1, 0.2, 0.3, 0.35)  # how many digits a number has (1..5)

MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
          'September', 'October', 'November', 'December')
WEEKDAYS = ('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday')
DATE_FORMS = (
    '{Month} {d}, {y}',            # March 3, 1997
    '{d} {Month} {y}',             # 3 March 1997
    '{Mon} {d}, {y}',              # Mar 3, 1997
    '{d} {Mon} {y}',               # 3 Mar 1997
    '{Weekday}, {d} {Month} {y}',  # Monday, 3 March 1997
    '{Wkd} {Mon} {d} {y}',         # Mon Mar 3 1997
    'the {dth} of {Month} {y}',    # the 3rd of March 1997
    '{Month} {dth}, {y}',          # March 3rd, 1997
    '{dd}-{Mon}-{y}',              # 03-Mar-1997
)

ONES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine',
        'ten', 'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen',
        'seventeen', 'eighteen', 'nineteen')
TENS = ('', '', 'twenty', 'thirty', 'forty', 'fifty', 'sixty', 'seventy', 'eighty', 'ninety')


def ordinal(d: int) -> str:
  suffix = 'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')
  return f'{d}{suffix}'


def date_text(day: datetime.date, form: int) -> str:
  """`day` written in DATE_FORMS[form]."""
  month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
  return DATE_FORMS[form].format(Month=month, Mon=month[:3], Weekday=weekday,
                                 Wkd=weekday[:3], d=day.day, dd=f'{day.day:02d}',
                                 dth=ordinal(day.day), y=day.year)


def _below_1000(n, british):
  """Words of 0 < n < 1000; `british` puts 'and' after the hundreds."""
  words = []
  if n >= 100:
    words += [ONES[n // 100], 'hundred']
    n %= 100
    if n and british:
      words.append('and')
  if n >= 20:
    words.append(TENS[n // 10] + (f'-{ONES[n % 10]}' if n % 10 else ''))
  elif n:
    words.append(ONES[n])
  return words


def number_words(n: int, british: bool = False) -> str:
  """English words of 0 <= n < 1,000,000: American by default, British adds 'and'."""
  if not 0 <= n < 1_000_000:
    raise ValueError(f'number out of range: {n}')
  if n == 0:
    return ONES[0]
  high, low = divmod(n, 1000)
  words = _below_1000(high, british) + ['thousand'] if high else []
  if low:
    if british and high and low < 100:
      words.append('and')  # 'forty-two thousand and seven'
    words += _below_1000(low, british)
  return ' '.join(words)


@functools.cache
def _pools():
  """{split: (days, {digit count: numbers})}: the disjoint content of each split."""
  rng = np.random.default_rng(0)

  def held_out(values, train_only):
    values = rng.permutation(values)
    n = int(round(HELD_OUT * len(values) / 3))
    return {'validation': values[:n], 'test': values[n:3 * n],
            'train': np.concatenate([values[3 * n:], train_only])}

  days = held_out(np.arange(FIRST_DAY.toordinal(), LAST_DAY.toordinal() + 1), np.arange(0))
  numbers = held_out(np.arange(HELD_OUT_FROM, MAX_NUMBER + 1), np.arange(HELD_OUT_FROM))
  bounds = (0, 10, 100, 1000, 10_000, 100_000)
  return {split: (days[split], {k: np.sort(v[(v >= bounds[k - 1]) & (v < bounds[k])])
                                for k in range(1, 6)})
          for split, v in numbers.items()}


def _candidates(rng, days, numbers, n):
  """`n` random (source, target) pairs over the given days and {digit count: numbers}."""
  task = rng.choice(len(TASKS), n, p=TASK_P)
  day = rng.choice(days, n)
  form = rng.integers(len(DATE_FORMS), size=n)
  sizes = np.array([len(numbers[k]) for k in range(1, 6)])
  p = np.where(sizes > 0, DIGITS_P, 0.0)
  digits = rng.choice(5, n, p=p / p.sum())
  index = (rng.random(n) * sizes[digits]).astype(int)
  style = rng.random(n) < 0.3  # British words, or digits with a comma
  for i in range(n):
    if TASKS[task[i]] == 'date':
      d = datetime.date.fromordinal(int(day[i]))
      yield date_text(d, int(form[i])), d.isoformat()
      continue
    x = int(numbers[int(digits[i]) + 1][index[i]])
    if TASKS[task[i]] == 'words':
      yield number_words(x, british=bool(style[i])), str(x)
    else:
      yield f'{x:,}' if style[i] else str(x), number_words(x)


def generate(split: str):
  """The (source, target) pairs of `split`, in order; the same on every call."""
  count, seed = SPLITS[split]
  days, numbers = _pools()[split]
  rng = np.random.default_rng(seed)
  pairs, seen = [], set()
  while len(pairs) < count:
    for source, target in _candidates(rng, days, numbers, count - len(pairs)):
      if split != 'train':  # train repeats small numbers; eval sources are distinct
        if source in seen:
          continue
        seen.add(source)
      pairs.append((source, target))
  return pairs


class Translation(tfds.core.GeneratorBasedBuilder):
  """Dates to ISO and numbers between words and digits: `source` and `target` text."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'source': tfds.features.Text(),
            'target': tfds.features.Text(),
        }),
        supervised_keys=('source', 'target'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # procedural
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    for i, (source, target) in enumerate(generate(split)):
      yield i, {'source': source, 'target': target}
