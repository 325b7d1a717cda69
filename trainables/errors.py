"""Errors that a user can fix: the CLI prints them as one line and exits 2."""


class DataError(ValueError):
    """A dataset file is missing, corrupt or malformed."""
