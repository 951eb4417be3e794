"""Run `c2p` in-process through its real entry point (error mapping and exit codes included)."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_c2p(args: list[str], capsys, monkeypatch) -> CliResult:
    from clip2point.app import main

    monkeypatch.setattr(sys, "argv", ["c2p", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps long paths otherwise
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
