"""What lga builds offline, without weights or a network, for shipped commands and the tests.

Tokenizers trained on a small corpus (the shipped toy CLIP's tokenizer, :mod:`lga.workflows.toy`),
random CLIP and LLaVA checkpoints saved through ``save_pretrained``, the tiny-birds dataset and
filled stores, and a fake OpenAI-compatible chat server: ``lga pretrain-toy`` and ``lga bench``
build their assets with them. The test suite uses them through :mod:`lga.testing`, whose
modules of the same names are aliases of these; shipped code never imports :mod:`lga.testing`
(an import-linter contract in pyproject.toml).
"""
