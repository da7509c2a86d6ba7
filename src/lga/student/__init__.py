"""The CLIP student: loading (``model``), image features and their cache, export."""
