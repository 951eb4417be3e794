"""Typed errors. The message of each is one line a user can act on; the CLI prints it as is."""

from __future__ import annotations

from pathlib import Path


class C2PError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class UsageError(C2PError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2


class Opt:
    """An option named inside an `OptionError` message: `Opt("batch_size")`, `Opt("select", "last")`."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: object = None):
        self.name, self.value = name, value


def python_spelling(option: Opt) -> str:
    """How the Python API names an option: `batch_size`, `select='last'`."""
    return option.name if option.value is None else f"{option.name}={option.value!r}"


class OptionText:
    """A message that names options, given in pieces (text and `Opt`s) and never formatted with
    str.format (values may hold braces). `str()` spells options the Python way; `render(spell)`
    lets the CLI spell them as flags."""

    def __init__(self, *pieces: str | Opt):
        self.pieces = pieces

    @property
    def options(self) -> list[str]:
        return [p.name for p in self.pieces if isinstance(p, Opt)]

    def render(self, spell) -> str:
        """The message with each `Opt` spelled by `spell(opt)`."""
        return "".join(spell(p) if isinstance(p, Opt) else str(p) for p in self.pieces)

    def __str__(self) -> str:
        return self.render(python_spelling)


class OptionError(UsageError):
    """A bad value of a named option, or a contradiction between options.

    `OptionError(Opt("batch_size"), " must be at least 1, got 0")` reads
    `batch_size must be at least 1, got 0` from Python, and the CLI prints
    `--batch-size must be at least 1, got 0` (`e.render(spell)`; see `OptionText`).
    """

    def __init__(self, *pieces: str | Opt):
        self.text = OptionText(*pieces)
        super().__init__(str(self.text))

    @property
    def options(self) -> list[str]:
        return self.text.options

    def render(self, spell) -> str:
        return self.text.render(spell)


class InputFileError(C2PError):
    """A point-cloud or mesh file that cannot be used; names the file and the problem."""

    # A file may put anything in a message (key names, header lines): one bounded line at most.
    MAX_PROBLEM = 300

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        problem = " ".join(str(problem).split())
        if len(problem) > self.MAX_PROBLEM:
            problem = problem[: self.MAX_PROBLEM - 3] + "..."
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelError(C2PError):
    """Unknown architecture, incompatible weights."""


class WeightsUnavailableError(ModelError):
    """Weights that cannot be fetched or found (offline, missing file); says how to provide them."""


class CheckpointError(C2PError):
    """A checkpoint or run folder that is missing, corrupt or of the wrong kind."""


class DatasetError(C2PError):
    """A dataset folder whose layout is not what the chosen reader expects."""


class BackendUnavailableError(C2PError):
    """An optional backend (triton, onnxruntime, tensorrt, CUDA) that is not installed or not usable here."""


class ExportCheckError(C2PError):
    """An exported graph whose outputs differ from torch by more than the stated tolerance."""
