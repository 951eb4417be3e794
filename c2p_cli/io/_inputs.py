"""Expanding files and folders into the files to read."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputFileError
from ._formats import SUPPORTED_EXTENSIONS


def list_inputs(paths: list[Path] | list[str], recursive: bool = False) -> list[Path]:
    """Files to read: files given directly are kept as given (an unknown extension fails later,
    when read, with a clear error); folders are scanned (recursively with `recursive`) for
    supported extensions, in sorted order. A path that does not exist raises `InputFileError`.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in found if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS))
        elif p.exists():
            out.append(p)
        else:
            raise InputFileError(p, "no such file or folder")
    return out
