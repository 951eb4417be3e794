"""Where a run's results go, and what an earlier run left there.

An output file `NAME` comes with hidden companions beside it:
- `.NAME.run.json`: the description of the run that wrote it (clip2point.run_spec.record), written
  before the first row; a `.json` output also holds it in its "meta" (the companion goes when it
  is complete).
- `.NAME.partial.jsonl`: the rows of a `.json` output while its run goes.
- `.NAME.part-R-of-W.jsonl`: the rows of rank R of W under torchrun while the run goes.

`plan_output` decides, before any model loads, what may happen to them: an output that holds
results (complete or interrupted) is refused unless the run says `resume` (finish it: only with
the same description, every differing field named) or `overwrite` (replace it); nothing is
touched before then. Torch-free: the CLI calls it before heavy imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import C2PError, Opt, OptionError
from .batching import FileResult
from .result_files import STDOUT, check_output_path, read_results


def sidecar_path(output: Path) -> Path:
    """Where a `.json` output collects its rows until the run ends."""
    return output.parent / f".{output.name}.partial.jsonl"


def part_path(output: Path, rank: int, world: int) -> Path:
    """Where rank `rank` of `world` streams its rows under torchrun."""
    return output.parent / f".{output.name}.part-{rank}-of-{world}.jsonl"


def record_path(output: Path) -> Path:
    """Where the description of the run that wrote `output` is kept."""
    return output.parent / f".{output.name}.run.json"


def part_files(output: Path) -> list[Path]:
    """Part files of any rank and world size beside `output`."""
    return sorted(output.parent.glob(f".{output.name}.part-*-of-*.jsonl"))


def leftovers(output: Path) -> list[Path]:
    """The results an earlier run left at `output`: the output itself when it holds anything, and the
    companions that hold rows. (A description without rows, e.g. of a deleted output, is nothing to lose.)"""
    found = [output] if output.is_file() and output.stat().st_size > 0 else []
    return found + [p for p in (sidecar_path(output), *part_files(output)) if p.is_file()]


@dataclass(frozen=True)
class OutputPlan:
    """Where results go (`path` None: a stream such as stdout) and what to do with an earlier run's:
    `resume` it (its description is `earlier`), or `overwrite` it."""

    path: Path | None
    fmt: str
    resume: bool = False
    overwrite: bool = False
    earlier: Mapping | None = None

    @property
    def to_file(self) -> bool:
        return self.path is not None


def plan_output(output: str | Path | None, fmt: str | None, *, resume: bool = False, overwrite: bool = False,
                description: Mapping | None = None) -> OutputPlan:
    """Check the output before any model loads: its path and format (a test write), and what an earlier
    run left there. Refuses (OptionError, exit 2) an output that holds results unless `resume` or
    `overwrite` is given, and `resume` of a run whose known `description` fields differ from the
    earlier one's (`clip2point.run_spec.record` before the model loads: what the options fix)."""
    if output is None or str(output) == STDOUT:
        if resume:
            raise OptionError(Opt("resume"), " needs an output file to resume from")
        return OutputPlan(None, fmt or "jsonl")
    if resume and overwrite:
        raise OptionError("give ", Opt("resume"), " or ", Opt("overwrite"), ", not both")
    path = Path(output)
    fmt = check_output_path(path, fmt)
    left = leftovers(path)
    if left and not (resume or overwrite):
        raise OptionError(
            Opt("output"), f" {path} already holds results (of a finished or an interrupted run); add ", Opt("resume"),
            " to finish it or ", Opt("overwrite"), " to replace it",
        )
    earlier = None
    if resume and left:
        earlier = read_record(path, fmt)
        check_same_run(path, earlier, description or {})
    return OutputPlan(path, fmt, resume=resume, overwrite=overwrite, earlier=earlier)


def read_record(output: Path, fmt: str) -> dict:
    """The description of the run that wrote `output`; OptionError when it has none (an older c2p's output)."""
    companion = record_path(output)
    try:
        if companion.is_file():
            found = json.loads(companion.read_text(encoding="utf-8"))
        elif fmt == "json" and output.is_file():
            found = (read_results(output, "json")[1] or {}).get("run")
        else:
            found = None
    except (OSError, ValueError, C2PError) as e:
        raise OptionError(Opt("resume"), f": cannot read the description of the run that wrote {output} ({e})") from e
    if not isinstance(found, dict):
        raise OptionError(
            Opt("resume"), f": {output} does not say which run wrote it (an older c2p's output, or another program's); "
            "start again with ", Opt("overwrite"),
        )
    return found


def check_same_run(output: Path, earlier: Mapping, now: Mapping) -> None:
    """OptionError naming every compared field in which run `now` differs from the run that wrote `output`."""
    from ..run_spec import describe_differences, differences

    found = differences(earlier, now)
    if found:
        raise OptionError(
            Opt("resume"), f": {output} holds the results of another run (", *describe_differences(found),
            "); run the same options again, or start again with ", Opt("overwrite"),
        )


def write_record(output: Path, description: Mapping) -> None:
    from ..store.atomic import atomic_write_bytes

    atomic_write_bytes(record_path(output), (json.dumps(dict(description), indent=2) + "\n").encode())


def earlier_rows(plan: OutputPlan, companions: Sequence[Path]) -> list[FileResult]:
    """Rows of the earlier run a resume may keep: the output itself and the companion files (JSON Lines) given."""
    rows: list[FileResult] = []
    path = plan.path
    if path.is_file() and path.stat().st_size > 0:
        rows += read_results(path, plan.fmt)[0]
    for p in companions:
        if p.is_file():
            rows += read_results(p, "jsonl")[0]
    return rows


def dropped_rows(earlier: Sequence[FileResult], input_paths: set[str]) -> int:
    """How many files of the earlier rows are no longer among the inputs (deleted, moved, or not given again)."""
    return len({r.path for r in earlier if r.path not in input_paths})
