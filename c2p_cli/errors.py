"""Typed errors. The message of each is one line a user can act on; the CLI prints it as is."""

from __future__ import annotations

from pathlib import Path


class C2PError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class UsageError(C2PError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2


class InputFileError(C2PError):
    """A point-cloud or mesh file that cannot be used; names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
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
