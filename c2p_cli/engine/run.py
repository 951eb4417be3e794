"""A whole `classify` run: inputs -> results streamed to an output, resumable, interruptible, shardable.

- Results go to the output as each batch finishes: JSON Lines / CSV are appended and flushed; a
  `.json` file is assembled at the end from a hidden JSON Lines sidecar beside it.
- Ctrl-C keeps what is done (`ClassifyInterrupted` says how much and where).
- `resume=True` reuses the rows of the output whose file still has the same path, size and
  modification time; failed files are tried again. The output ends with every input exactly once,
  in input order.
- Under torchrun each rank classifies every world_size-th input on its own device, streaming to
  its own hidden part file (so `resume` works per rank); rank 0 gathers the rows and writes the
  output in input order, the same file one process writes.

Library code: it reports through callbacks and never prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import C2PError, Opt, OptionError, OptionText
from .batching import FileResult, ReadOptions
from .result_files import STDOUT, RowWriter, check_output_path, read_results, render_results, write_results


class ClassifyInterrupted(C2PError):
    """Ctrl-C during a run; what was finished is in the output. `text` names options (OptionText)."""

    exit_code = 130

    def __init__(self, text: OptionText):
        self.text = text
        super().__init__(str(text))


@dataclass
class ClassifyOutcome:
    total: int  # inputs of this run (all ranks)
    classified: int  # results made by this run (this rank)
    reused: int  # results kept from an earlier run (all ranks on rank 0, else this rank)
    failed: int  # results with an error (all ranks on rank 0, else this rank)
    results: list[FileResult] | None = None  # every result in input order, when collected (rank 0)
    is_main: bool = True


def sidecar_path(output: Path) -> Path:
    """Where a `.json` output collects its rows until the run ends."""
    return output.parent / f".{output.name}.partial.jsonl"


def part_path(output: Path, rank: int, world: int) -> Path:
    """Where rank `rank` of `world` streams its rows under torchrun."""
    return output.parent / f".{output.name}.part-{rank}-of-{world}.jsonl"


def _key(path: str, size, mtime) -> tuple:
    return (path, size, mtime)


def _earlier_rows(output: Path, fmt: str, extra: Sequence[Path]) -> list[FileResult]:
    """Rows of an earlier run: the output itself and the sidecar / part files it left behind."""
    rows: list[FileResult] = []
    if output.is_file() and output.stat().st_size > 0:
        rows += read_results(output, fmt)[0]
    for p in extra:
        if p.is_file():
            rows += read_results(p, "jsonl")[0]
    return rows


def _stat_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _key(str(path), st.st_size, st.st_mtime)


def _open_append(path: Path, fmt: str, k: int, rows: Sequence[FileResult], start_fresh: bool):
    """A RowWriter appending to `path`, which first holds exactly `rows` (written atomically)."""
    if rows or not start_fresh:
        write_results(path, rows, fmt=fmt) if fmt != "csv" else _write_csv(path, rows, k)
        fh = open(path, "a", encoding="utf-8", newline="")
        return RowWriter(fh, fmt, k, header=False)
    fh = open(path, "w", encoding="utf-8", newline="")
    return RowWriter(fh, fmt, k, header=True)


def _write_csv(path: Path, rows: Sequence[FileResult], k: int) -> None:
    from ..store.atomic import atomic_write_bytes

    atomic_write_bytes(path, render_results(rows, "csv", k=k).encode())


def classify_to_output(
    classifier,
    entries: Sequence[Path | FileResult],
    *,
    read: ReadOptions = ReadOptions(),
    batch_size: int = 32,
    top_k: int = 5,
    workers: int | None = None,
    precision: str | None = None,
    output: str | Path | None = None,
    fmt: str = "jsonl",
    resume: bool = False,
    meta: dict | None = None,
    stream=None,
    collect: bool = False,
    ctx=None,
    on_progress: Callable[[int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> ClassifyOutcome:
    """Classify `entries` (from `clip2point.engine.inputs.gather_inputs`) and write every result.

    `output`: a result file (its format `fmt`: jsonl, csv or json), or None / "-" for `stream`
    only (a text stream, e.g. stdout, written as `fmt`; "table" writes nothing there: use
    `collect`). `collect` keeps every result, in input order, in the outcome. `ctx`: a
    `clip2point.distributed.DistContext` under torchrun. `on_progress(n)` after each batch (this
    rank's inputs done: reused, unusable or classified), `on_result(r)` for each new result of
    this rank.
    """
    from ..distributed import DistContext, barrier, gather_objects, shard
    from .pipeline import classify_files

    ctx = ctx or DistContext()
    meta = dict(meta or {})
    to_file = output is not None and str(output) != STDOUT
    output = Path(output) if to_file else None
    if resume and not to_file:
        raise OptionError(Opt("resume"), " needs an output file to resume from")
    if to_file:
        check_output_path(output, fmt)
    k = max(1, min(top_k, len(classifier.labels)))
    world, rank = ctx.world_size, ctx.rank
    mine = [entries[i] for i in shard(len(entries), ctx)]

    # What an earlier run left: rows to reuse, keyed by (path, size, mtime).
    own_part = None
    if to_file:
        own_part = part_path(output, rank, world) if world > 1 else (sidecar_path(output) if fmt == "json" else None)
    earlier: list[FileResult] = []
    if resume:
        earlier = _earlier_rows(output, fmt, [own_part] if own_part is not None else [])
    reusable = {_key(r.path, r.size, r.mtime): r for r in earlier if r.ok and r.size is not None}
    plan: list[tuple[str, object]] = []  # ("reuse", earlier row) | ("error", unusable input) | ("new", Path)
    for e in mine:
        if isinstance(e, FileResult):
            plan.append(("error", e))
            continue
        key = _stat_key(e)
        old = reusable.get(key) if key is not None else None
        plan.append(("reuse", old) if old is not None else ("new", e))
    reused = [item for kind, item in plan if kind == "reuse"]
    input_paths = {str(e) if isinstance(e, Path) else e.path for e in entries}
    # Rows about files that are not inputs of this run stay in the file (rank 0 keeps them), after the inputs.
    foreign = list({r.path: r for r in earlier if r.path not in input_paths}.values()) if rank == 0 else []

    # Where this rank streams its rows.
    writer = None
    keep_all = collect or world > 1 or fmt == "json" or (to_file and resume)
    if to_file:
        if world > 1:
            writer = _open_append(own_part, "jsonl", k, reused, start_fresh=True)
        elif fmt == "json":
            writer = _open_append(own_part, "jsonl", k, reused + foreign, start_fresh=True)
        else:
            k = max([k] + [len(r.top_k) for r in reused + foreign])
            writer = _open_append(output, fmt, k, (reused + foreign) if resume else [], start_fresh=not resume)
    elif stream is not None and world == 1 and fmt in ("jsonl", "csv"):
        writer = RowWriter(stream, fmt, k)

    kept: list[FileResult] = []
    new_count = failed = processed = 0
    new_paths = [item for kind, item in plan if kind == "new"]

    def batch_done(n: int) -> None:
        if writer is not None:
            writer.flush()  # what is written survives Ctrl-C, a crash, a power cut
        if on_progress is not None:
            on_progress(n)

    results: Iterator[FileResult] = classify_files(
        classifier, new_paths, read=read, batch_size=batch_size, top_k=top_k, workers=workers, precision=precision,
        on_progress=batch_done,
    )
    if on_progress is not None and reused:
        on_progress(len(reused))
    try:
        for kind, item in plan:
            if kind == "error" and on_progress is not None:
                on_progress(1)
            if kind == "new":
                r = next(results)
                new_count += 1
            else:
                r = item
            failed += not r.ok
            if keep_all:
                kept.append(r)
            if kind != "reuse" and writer is not None:
                writer.add(r)
            processed += 1
            if kind != "reuse" and on_result is not None:
                on_result(r)
        for _ in results:  # let the pipeline finish: it reports its last batch after the last row is taken
            raise C2PError("internal error: more results than inputs")  # pragma: no cover
        if writer is not None:
            writer.flush()
    except KeyboardInterrupt:
        results.close()
        if writer is not None:
            writer.flush()
        done = f"interrupted: {processed} of {len(mine)} inputs done"
        if not to_file:
            text = OptionText(done + ("; their results are above" if writer is not None else ""))
        else:
            where = output
            if world == 1 and fmt == "json":
                if writer is not None:
                    writer.stream.close()
                write_results(output, kept + foreign, {**meta, "complete": False}, fmt="json")
            elif world > 1:
                where = own_part
            text = OptionText(f"{done}, they are in {where}; run again with ", Opt("resume"), " to finish")
        raise ClassifyInterrupted(text) from None
    finally:
        results.close()
        if writer is not None and to_file and not writer.stream.closed:
            writer.stream.close()

    # Every row of this rank, in its input order; rank 0 merges the ranks' rows in input order.
    ordered: list[FileResult] | None = kept if keep_all else None
    n_reused = len(reused)
    if world > 1:
        gathered = gather_objects(ctx, ([r.to_dict() for r in kept], len(reused)))
        ordered = None
        if ctx.is_main:
            per_rank = [iter([FileResult.from_dict(d) for d in rows]) for rows, _ in gathered]
            ordered = [next(per_rank[i % world]) for i in range(len(entries))]
            failed = sum(not r.ok for r in ordered)
            n_reused = sum(n for _, n in gathered)

    if ctx.is_main and ordered is not None:
        if to_file and (world > 1 or fmt == "json" or (resume and (reused or foreign))):
            write_results(output, ordered + foreign, {**meta, "complete": True}, fmt=fmt)
        elif not to_file and stream is not None and fmt not in ("table",) and writer is None:
            stream.write(render_results(ordered, fmt, meta, k=k))
            stream.flush()
    if to_file:
        barrier(ctx)  # the output is complete before any rank removes what a resume would read
        if own_part is not None:
            own_part.unlink(missing_ok=True)
    return ClassifyOutcome(
        total=len(entries), classified=new_count, reused=n_reused, failed=failed,
        results=ordered if collect else None, is_main=ctx.is_main,
    )
