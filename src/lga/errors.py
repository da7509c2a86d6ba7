"""Exceptions that the CLI turns into a clear message and a non-zero exit."""


class LgaError(Exception):
    """Base class for errors a user can fix (bad input, bad config, missing files)."""


class ConfigError(LgaError):
    """A configuration key or value is invalid."""


class DataError(LgaError):
    """A dataset is malformed. ``problems`` lists every fault found, one per row or file;
    ``listed`` False: the message says all they say (one file-level fault), so the CLI prints
    the message alone."""

    def __init__(self, message: str, problems: list | None = None, *, listed: bool = True):
        super().__init__(message)
        self.problems = list(problems or [])
        self.listed = listed
