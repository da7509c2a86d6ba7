"""Moved to :mod:`lga.offline.fake_chat_server`
where shipped code (lga bench, lga pretrain-toy) builds with it.

This name stays an alias of the same module, so the tests' imports and patches keep working.
"""

import sys

from lga.offline import fake_chat_server

sys.modules[__name__] = fake_chat_server
