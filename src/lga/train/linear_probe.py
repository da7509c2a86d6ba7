"""Moved to :mod:`lga.student.heads` (the head is part of the saved student, and evaluation
reads it); these names stay importable from here."""

from lga.student.heads import (  # noqa: F401
    PENALTIES,
    PROBE_FILE,
    LinearProbe,
    balance_weights,
    balanced_rows,
    fit_linear_probe,
    penalty_for,
    read_head,
    train_head,
    train_logreg,
)
