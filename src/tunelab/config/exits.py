"""A bad config on the command line ends in one line on stderr and exit code 2, never a traceback:
Hydra's composition errors (`adapter=lorra`, an unknown key) and tunelab's own ConfigError."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

from tunelab.config.errors import ConfigError

EXIT_BAD_CONFIG = 2


def composition_message(err: ConfigCompositionException | OverrideParseException) -> str:
    """Hydra's multi-line composition error as one line: a missing group option names the group,
    the value and the options that exist; other errors keep Hydra's text and its cause."""
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return str(ConfigError(group.replace("/", "."), name,
                               f"one of the options of config group {group!r}: "
                               f"{', '.join(err.options)}"))
    first, *rest = str(err).split("\nConfig search path")[0].splitlines()
    cause = str(err.__cause__).splitlines()[:1] if err.__cause__ else []
    lines = (line.strip().rstrip(".") for line in [first, *cause, *rest])
    return "; ".join(line for line in lines if line)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_CONFIG)


@contextmanager
def config_errors_exit(prog: str, show_traceback: bool = False) -> Iterator[None]:
    """Turn a config error raised inside the block into one line and exit code 2; with
    `show_traceback` (the user set HYDRA_FULL_ERROR=1) the traceback is printed above that line."""
    try:
        yield
    except (ConfigError, ConfigCompositionException, OverrideParseException) as err:
        if show_traceback:
            traceback.print_exc()
        fail(prog, str(err) if isinstance(err, ConfigError) else composition_message(err))
