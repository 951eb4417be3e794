"""What every command shares without each module repeating it: --verbose / --log-level, plain
string values for choice options, and which options the user typed.

`with_common_options(func)` returns a function typer registers in place of `func`: the same
parameters plus `--verbose/-v` (repeatable) and `--log-level`. Before `func` runs, the `c2p.*`
loggers are attached to stderr at the asked level, `Choice` values become plain strings (library
code compares and formats strings), and the names of options given on the command line are noted
for `given_on_command_line`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._options import LogLevel

LOGGER = "c2p"
log = logging.getLogger("c2p.cli")
_HANDLER_MARK = "_c2p_cli_handler"
_explicit: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("c2p_explicit_options", default=frozenset())

Verbose = Annotated[
    int,
    typer.Option("--verbose", "-v", count=True, help="Log what c2p does to stderr (-v: info, -vv: debug)."),
]
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option("--log-level", envvar="C2P_LOG_LEVEL", case_sensitive=False, help="Level of the c2p.* loggers on stderr (overrides -v)."),
]


def configure_logging(verbose: int = 0, log_level: str | None = None) -> int | None:
    """Attach one stderr handler to the `c2p` logger (and so to every `c2p.*` logger); returns the level set.

    Nothing is attached without -v or --log-level: warnings then reach stderr through Python's
    last-resort handler, as before.
    """
    if log_level:
        level = getattr(logging, str(log_level).upper())
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        return None
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(level)
    return level


def plain(value):
    """Choice enums (and lists of them) as their string values; anything else unchanged."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _current_context():
    try:  # typer releases that vendor click
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    return get_current_context(silent=True)


def _note_explicit_options() -> None:
    ctx = _current_context()
    if ctx is None:
        return
    given = set()
    for name in ctx.params:
        try:
            source = ctx.get_parameter_source(name)
        except Exception:
            continue
        if source is not None and source.name == "COMMANDLINE":
            given.add(name)
    _explicit.set(frozenset(given))


def given_on_command_line(name: str) -> bool:
    """True when the option with Python name `name` was typed on the command line (not a default or C2P_* variable)."""
    return name in _explicit.get()


def with_common_options(func):
    """`func` with --verbose/-v and --log-level added, plain-string choices, and explicit options noted."""
    signature = inspect.signature(func, eval_str=True)
    taken = set(signature.parameters)
    extra = []
    if "verbose" not in taken:
        extra.append(inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Verbose))
    if "log_level" not in taken:
        extra.append(inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LogLevelOption))
    params = list(signature.parameters.values())
    # keyword-only parameters must follow the others; typer reads the order for the help listing
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is not inspect.Parameter.KEYWORD_ONLY else p for p in params]

    @functools.wraps(func)
    def command(**kwargs):
        verbose = kwargs.pop("verbose", 0) if "verbose" not in taken else kwargs.get("verbose", 0)
        log_level = kwargs.pop("log_level", None) if "log_level" not in taken else kwargs.get("log_level")
        configure_logging(verbose, plain(log_level))
        _note_explicit_options()
        values = {k: plain(v) for k, v in kwargs.items()}
        log.debug("%s: %s", func.__name__, ", ".join(f"{k}={v!r}" for k, v in values.items()))
        return func(**values)

    command.__signature__ = signature.replace(parameters=[*params, *extra])
    command.__annotations__ = {p.name: p.annotation for p in [*params, *extra]}
    if signature.return_annotation is not inspect.Signature.empty:
        command.__annotations__["return"] = signature.return_annotation
    return command


def output_folder(path: Path, flag: str, what: str = "folder") -> Path:
    """Create the folder a command writes into before any work starts, or refuse it in one line
    (a usage error): `path` given as `flag`, called `what` in the messages."""
    from ..errors import UsageError

    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: {flag} must be a {what}, but it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: cannot create the {what} ({e.strerror or e})") from e
    return path
