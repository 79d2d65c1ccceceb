"""Errors a user can fix, told apart from bugs.

A `UserError` says what is wrong with something the user gave or has: a config value, a data
set, a model or run folder, a system library. `lw` prints its message and exits with status 2,
without a traceback (`LW_TRACEBACK=1` shows it anyway); any other exception is a bug and keeps
its traceback. Each subclass also derives from the built-in type that callers catch today
(`ValueError`, `RuntimeError`), so `except ValueError` keeps working.

`lw` treats `FileNotFoundError` the same way: the paths the commands open are the user's.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """An invalid config key, value or override (or one that contradicts the files it names)."""


class DataError(UserError, ValueError):
    """A data set that is corrupt, incomplete, of another format or lacks what a command needs."""


class ModelFolderError(UserError, ValueError):
    """A model / RAE / run folder that is of the wrong kind, damaged or incomplete."""


class SystemLibraryError(UserError, RuntimeError):
    """A system library or program the command needs is missing or does not work (GL, ffmpeg, ...)."""
