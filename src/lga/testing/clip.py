"""Moved to :mod:`lga.offline.clip`
where shipped code (lga bench, lga pretrain-toy) builds with it.

This name stays an alias of the same module, so the tests' imports and patches keep working.
"""

import sys

from lga.offline import clip

sys.modules[__name__] = clip
