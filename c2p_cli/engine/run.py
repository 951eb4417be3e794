"""A whole `classify` run: inputs -> results streamed to an output, resumable, interruptible, shardable.

- Results go to the output as each batch finishes: JSON Lines / CSV are appended and flushed; a
  `.json` file is assembled at the end from a hidden JSON Lines companion beside it.
- The output records the run's description (clip2point.run_spec.record: `.NAME.run.json`, and a
  `.json` output's meta); `plan_output` (clip2point.engine.outputs) has refused, before the model
  loaded, an earlier run's output unless the run resumes it (same description) or overwrites it.
- Ctrl-C keeps what is done (`ClassifyInterrupted` says how much and where).
- A resume reuses the rows of the output whose file still has the same path, size and modification
  time; failed files are tried again; rows of files no longer among the inputs are dropped (and
  counted). The output ends with every input exactly once, in input order.
- Under torchrun each rank classifies every world_size-th input on its own device, streaming to
  its own hidden part file (so a resume works per rank, also with another number of ranks); rank 0
  gathers the rows and writes the output in input order, the same file one process writes.

Library code: it reports through `clip2point.events` and never prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import C2PError, Opt, OptionText
from ..events import EventHook, emit
from .batching import FileResult, file_stat, in_input_order
from .outputs import (
    OutputPlan,
    check_same_run,
    dropped_rows,
    earlier_rows,
    part_files,
    part_path,
    record_path,
    sidecar_path,
    write_record,
)
from .result_files import RowWriter, render_results, write_results


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
    dropped: int = 0  # earlier rows of files no longer among the inputs (rank 0)
    results: list[FileResult] | None = None  # every result in input order, when collected (rank 0)
    is_main: bool = True


def output_meta(classifier, spec, description: dict) -> dict:
    """What a `.json` output's "meta" says: the classifier's own meta, how files were read, and the run's description."""
    read = spec.read_options()
    return {**(getattr(classifier, "meta", None) or {}),
            "read": {"n_points": read.n_points, "sampling": read.sampling, "up": read.up, "seed": read.seed},
            "run": dict(description)}  # fmt: skip


def classify_to_output(
    classifier,
    entries: Sequence[Path | FileResult],
    spec,
    plan: OutputPlan | None = None,
    *,
    description: dict | None = None,
    stream=None,
    collect: bool = False,
    ctx=None,
    on_event: EventHook | None = None,
) -> ClassifyOutcome:
    """Classify `entries` (from `clip2point.engine.inputs.gather_inputs`) as `spec` describes
    (complete: clip2point.run_spec.complete) and write every result where `plan` says
    (clip2point.engine.outputs.plan_output; None: `stream` only).

    `description`: what the output records (default `run_spec.record(spec, classifier)`); on a
    resume it must equal the earlier run's. `stream`: a text stream (e.g. stdout) the results go to
    when the plan has no file, written as `plan.fmt` ("table" writes nothing there: use `collect`).
    `collect` keeps every result, in input order, in the outcome. `ctx`: a
    `clip2point.distributed.DistContext` under torchrun. Events: ("classify", done, total) after
    each batch (this rank's inputs done: reused, unusable or classified), ("result", result=r) for
    each new result of this rank.
    """
    from ..run_spec import record

    run = _Run(classifier, entries, spec, plan or OutputPlan(None, "jsonl"), description or record(spec, classifier),
               ctx or _OneProcess(), on_event)  # fmt: skip
    return run.go(stream, collect)


@dataclass(frozen=True)
class _OneProcess:
    """The context of a run outside torchrun (clip2point.distributed.DistContext's fields that a run reads),
    so that a run with nothing to classify never imports torch."""

    rank: int = 0
    world_size: int = 1
    is_main: bool = True


def _write_csv(path: Path, rows: Sequence[FileResult], k: int) -> None:
    from ..store.atomic import atomic_write_bytes

    atomic_write_bytes(path, render_results(rows, "csv", k=k).encode())


def _open_append(path: Path, fmt: str, k: int, rows: Sequence[FileResult]) -> RowWriter:
    """A RowWriter appending to `path`, which first holds exactly `rows` (written atomically)."""
    if rows:
        write_results(path, rows, fmt=fmt) if fmt != "csv" else _write_csv(path, rows, k)
        return RowWriter(open(path, "a", encoding="utf-8", newline=""), fmt, k, header=False)
    return RowWriter(open(path, "w", encoding="utf-8", newline=""), fmt, k, header=True)


class _Run:
    """One rank's part of a classify run (see `classify_to_output`)."""

    def __init__(self, classifier, entries, spec, plan: OutputPlan, description: dict, ctx, on_event):
        self.clf, self.entries, self.spec, self.plan, self.ctx, self.on_event = classifier, entries, spec, plan, ctx, on_event
        self.description = description
        self.meta = output_meta(classifier, spec, description)
        # (no classifier when no input can be classified: nothing is loaded then)
        labels = classifier.labels if classifier is not None else (spec.labels or ())
        self.k = max(1, min(spec.top_k, len(labels) or spec.top_k))
        self.world, self.rank = ctx.world_size, ctx.rank
        self.mine = list(entries[self.rank :: self.world])
        self.own_part = None
        if plan.to_file:
            single_json = self.world == 1 and plan.fmt == "json"
            self.own_part = part_path(plan.path, self.rank, self.world) if self.world > 1 else (
                sidecar_path(plan.path) if single_json else None)
        self.reuse: dict[str, FileResult] = {}
        self.dropped = 0
        self.writer: RowWriter | None = None
        self.kept: list[FileResult] = []

    def go(self, stream, collect: bool) -> ClassifyOutcome:
        plan = self.plan
        if plan.to_file:
            if plan.resume and plan.earlier is not None:
                check_same_run(plan.path, plan.earlier, self.description)  # what only the model could tell
            if plan.resume:
                self._load_earlier()
            self._start_output()
        self.keep_all = collect or self.world > 1 or plan.fmt == "json" or (plan.to_file and plan.resume)
        self._open_writer(stream)
        counts = self._stream()
        ordered, counts = self._merge_ranks(counts)
        self._finish(ordered, stream)
        new_count, reused, failed = counts
        return ClassifyOutcome(total=len(self.entries), classified=new_count, reused=reused, failed=failed,
                               dropped=self.dropped, results=ordered if collect else None, is_main=self.ctx.is_main)  # fmt: skip

    # -- before the first row -----------------------------------------------------------------

    def _load_earlier(self) -> None:
        """Rows to reuse (an ok row whose file still has its path, size and mtime) and how many rows are dropped."""
        plan = self.plan
        # The output, this rank's part, and what runs of another world size left (other ranks' parts of
        # this world size hold only their own shards).
        companions = [sidecar_path(plan.path), *(p for p in part_files(plan.path) if not self._current_world(p))]
        if self.world > 1:
            companions.append(self.own_part)
        earlier = earlier_rows(plan, companions)
        by_key = {(r.path, r.size, r.mtime): r for r in earlier if r.ok and r.size is not None}
        for e in self.mine:
            if isinstance(e, Path):
                row = by_key.get((str(e), *file_stat(e)))
                if row is not None:
                    self.reuse[str(e)] = row
        if self.ctx.is_main:
            self.dropped = dropped_rows(earlier, {str(e) if isinstance(e, Path) else e.path for e in self.entries})

    def _current_world(self, part: Path) -> bool:
        return part.name.endswith(f"-of-{self.world}.jsonl")

    def _start_output(self) -> None:
        """An overwritten run's files go (rank 0); the description is recorded before any row (every rank
        writes the same file atomically, so that a rank's part never outlives its description)."""
        plan = self.plan
        if plan.overwrite and self.ctx.is_main:
            stale = [plan.path, sidecar_path(plan.path), *(p for p in part_files(plan.path) if not self._current_world(p))]
            for p in stale:  # (parts of this world size are each rank's to truncate)
                p.unlink(missing_ok=True)
        write_record(plan.path, self.description)

    def _open_writer(self, stream) -> None:
        plan, k = self.plan, self.k
        reused = [self.reuse[str(e)] for e in self.mine if isinstance(e, Path) and str(e) in self.reuse]
        if plan.to_file:
            if self.own_part is not None:
                self.writer = _open_append(self.own_part, "jsonl", k, reused)
            else:
                self.k = max([k] + [len(r.top_k) for r in reused])
                self.writer = _open_append(plan.path, plan.fmt, self.k, reused)
        elif stream is not None and self.world == 1 and plan.fmt in ("jsonl", "csv"):
            self.writer = RowWriter(stream, plan.fmt, k)
        self.n_reused = len(reused)

    # -- the rows -----------------------------------------------------------------------------

    def _stream(self) -> tuple[int, int, int]:
        """Classify this rank's new inputs; every row in input order. Returns (new, reused, failed)."""
        done = [0]
        total = len(self.mine)

        def files_done(event) -> None:
            if self.writer is not None:
                self.writer.flush()  # what is written survives Ctrl-C, a crash, a power cut
            emit(self.on_event, "classify", done[0], total)

        new_paths = [e for e in self.mine if isinstance(e, Path) and str(e) not in self.reuse]
        classified = iter(())
        if new_paths:
            from .pipeline import classify_files

            classified = classify_files(self.clf, new_paths, self.spec, on_event=files_done)
        results = in_input_order(self.mine, classified, self.reuse)
        new_count = failed = 0
        try:
            for e, r in zip(self.mine, results, strict=True):
                done[0] += 1
                reused = isinstance(e, Path) and str(e) in self.reuse
                new_count += isinstance(e, Path) and not reused
                failed += not r.ok
                if self.keep_all:
                    self.kept.append(r)
                if not reused:
                    if self.writer is not None:
                        self.writer.add(r)
                    emit(self.on_event, "result", result=r)
                if not isinstance(e, Path) or reused:
                    emit(self.on_event, "classify", done[0], total)
            if self.writer is not None:
                self.writer.flush()
        except KeyboardInterrupt:
            results.close()
            raise self._interrupted(done[0]) from None
        finally:
            results.close()
            if self.writer is not None and self.plan.to_file and not self.writer.stream.closed:
                self.writer.stream.close()
        return new_count, self.n_reused, failed

    def _interrupted(self, processed: int) -> ClassifyInterrupted:
        """Ctrl-C: what is done is flushed (a `.json` output written, marked incomplete); says where it is."""
        if self.writer is not None and not self.writer.stream.closed:
            self.writer.flush()
        done = f"interrupted: {processed} of {len(self.mine)} inputs done"
        plan = self.plan
        if not plan.to_file:
            return ClassifyInterrupted(OptionText(done + ("; their results are above" if self.writer is not None else "")))
        where = plan.path
        if self.world == 1 and plan.fmt == "json":
            if self.writer is not None:
                self.writer.stream.close()
            write_results(plan.path, self.kept, {**self.meta, "complete": False}, fmt="json")
        elif self.world > 1:
            where = self.own_part
        return ClassifyInterrupted(OptionText(f"{done}, they are in {where}; run again with ", Opt("resume"), " to finish"))

    # -- after the last row -------------------------------------------------------------------

    def _merge_ranks(self, counts: tuple[int, int, int]):
        """Every row of this rank in its input order; rank 0 merges the ranks' rows in input order."""
        ordered = self.kept if self.keep_all else None
        if self.world == 1:
            return ordered, counts
        from ..distributed import gather_objects

        new_count, reused, failed = counts
        gathered = gather_objects(self.ctx, ([r.to_dict() for r in self.kept], reused))
        if not self.ctx.is_main:
            return None, counts
        per_rank = [iter([FileResult.from_dict(d) for d in rows]) for rows, _ in gathered]
        ordered = [next(per_rank[i % self.world]) for i in range(len(self.entries))]
        return ordered, (new_count, sum(n for _, n in gathered), sum(not r.ok for r in ordered))

    def _finish(self, ordered, stream) -> None:
        plan = self.plan
        if self.ctx.is_main and ordered is not None:
            if plan.to_file and (self.world > 1 or plan.fmt == "json" or (plan.resume and self.reuse)):
                write_results(plan.path, ordered, {**self.meta, "complete": True}, fmt=plan.fmt)
            elif not plan.to_file and stream is not None and plan.fmt != "table" and self.writer is None:
                stream.write(render_results(ordered, plan.fmt, self.meta, k=self.k))
                stream.flush()
        if plan.to_file:
            if self.world > 1:
                from ..distributed import barrier

                barrier(self.ctx)  # the output is complete before any rank removes what a resume would read
            if self.own_part is not None:
                self.own_part.unlink(missing_ok=True)
            if self.ctx.is_main:
                for p in part_files(plan.path):  # other world sizes' parts, now merged
                    p.unlink(missing_ok=True)
                if plan.fmt == "json":
                    record_path(plan.path).unlink(missing_ok=True)  # the meta holds it
