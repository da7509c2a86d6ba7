"""The description store (``core``: SQLite, claims, export, merge) and its importer."""
