"""The description store: teacher answers in SQLite, keyed by dataset, image, prompt, teacher
and settings (the public names are in :mod:`lga.store.core`, which lists the modules by job)."""
