"""Moved to :mod:`lga.offline.tiny_llava`
where shipped code (lga bench, lga pretrain-toy) builds with it.

This name stays an alias of the same module, so the tests' imports and patches keep working.
"""

import sys

from lga.offline import tiny_llava

sys.modules[__name__] = tiny_llava
