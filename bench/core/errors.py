"""The errors a user's input causes, below every module that raises or catches them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InputError(ValueError):
    """An error the user's input caused (config or data): the run is ``invalid``, not ``failed``."""


class ConfigError(InputError):
    """A config value the run cannot use."""


class DataError(InputError):
    """A data file or record a task cannot use; the message names the file and the fix."""


@contextlib.contextmanager
def input_errors(what: str) -> Iterator[None]:
    """``ValueError``s raised inside (peft's way to refuse a config) become ``ConfigError``s naming ``what``."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{what}: {err}") from err
