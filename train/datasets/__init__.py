"""TFDS builders over data that installed packages ship, so experiments run offline.

Importing this package registers the builders with TFDS; `train.data` prepares them on
first use (they take seconds). Prepare one by hand with
`python -m train.datasets NAME [--data_dir DIR]`.
"""

from train.datasets.caption_shapes import CaptionShapes
from train.datasets.digits import Digits
from train.datasets.events import Events
from train.datasets.karate import Karate
from train.datasets.moving_digits import MovingDigits
from train.datasets.multishapes import Multishapes
from train.datasets.pydoc_chapters import PydocChapters
from train.datasets.pydoc_chapters_order import PydocChaptersOrder
from train.datasets.pydoc_chapters_spell import PydocChaptersSpell
from train.datasets.pydoc_code import PydocCode
from train.datasets.pydoc_retro import PydocRetro
from train.datasets.pydoc_text import PydocText
from train.datasets.random_graphs import RandomGraphs
from train.datasets.recall import Recall
from train.datasets.sbm import Sbm
from train.datasets.scene import Scene
from train.datasets.shapes import Shapes
from train.datasets.spirals import Spirals
from train.datasets.tones import Tones
from train.datasets.toy2d import Toy2d
from train.datasets.traffic import Traffic
from train.datasets.translation import Translation

OFFLINE = {'caption_shapes': CaptionShapes, 'digits': Digits, 'events': Events, 'karate': Karate,
           'moving_digits': MovingDigits, 'multishapes': Multishapes,
           'pydoc_chapters': PydocChapters, 'pydoc_chapters_order': PydocChaptersOrder,
           'pydoc_chapters_spell': PydocChaptersSpell,
           'pydoc_code': PydocCode, 'pydoc_retro': PydocRetro,
           'pydoc_text': PydocText, 'random_graphs': RandomGraphs, 'recall': Recall, 'sbm': Sbm,
           'scene': Scene, 'shapes': Shapes, 'spirals': Spirals, 'tones': Tones, 'toy2d': Toy2d,
           'traffic': Traffic, 'translation': Translation}
