"""Errors raised by the data readers.

Every reader in `visiondata` raises one of these for bad input, with a message naming the file
and saying what to do:

- `DataError` (an `OSError`): a file exists but cannot be used (corrupt, truncated, wrong
  format or wrong fields).
- `MissingDataError` (a `DataError` and a `FileNotFoundError`): a file or directory is absent.

Catching `DataError` catches both.
"""

from __future__ import annotations


class DataError(OSError):
    """A data file is corrupt, truncated or not in the expected format."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file or directory does not exist."""

