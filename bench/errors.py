"""The errors a user's input causes, below every module that raises or catches them."""

from __future__ import annotations


class InputError(ValueError):
    """An error the user's input caused (config or data): the run is ``invalid``, not ``failed``."""


class ConfigError(InputError):
    """A config value the run cannot use."""


class DataError(InputError):
    """A data file or record a task cannot use; the message names the file and the fix."""
