"""`c2p classify`: zero-shot (or adapter, or exported-engine) classification of files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from . import _options as opt


def classify(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Point-cloud / mesh files, folders, glob patterns ('scans/**/*.ply'), or - to read paths from stdin.",
            show_default=False,
        ),
    ],
    labels: opt.Labels = None,
    labels_file: opt.LabelsFile = None,
    label_set: opt.LabelSet = None,
    templates: opt.Prompt = None,
    model: opt.Model = table.default("model"),
    pretrained: opt.Pretrained = table.default("pretrained"),
    depth_encoder: opt.DepthEncoderPath = None,
    adapter: opt.Adapter = None,
    which: opt.WhichOption = table.default("which"),
    backend: opt.BackendOption = None,
    engine: opt.Engine = None,
    views: opt.RunViews = None,
    batch_size: opt.BatchSize = table.default("batch_size"),
    device: opt.Device = table.default("device"),
    precision: opt.PrecisionOption = table.default("precision"),
    top_k: opt.TopK = table.default("top_k"),
    output: Annotated[
        str | None,
        opt.output("Results file (.jsonl, .json or .csv, written as each batch finishes), or - for stdout."),
    ] = None,
    fmt: Annotated[
        opt.OutputFormat | None,
        typer.Option("--format", case_sensitive=False,
                     help="Results as jsonl, csv, json or table (default: the --output extension; on stdout a table on a terminal, else jsonl)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the run whose results are in --output: keep its rows (same path, size and mtime) "
                                            "and classify the rest; refused when the options differ.")
    ] = False,
    overwrite: opt.Overwrite = False,
    recursive: opt.Recursive = False,
    ext: opt.Extensions = None,
    n_points: opt.RunPoints = None,
    sampling: opt.RunSampling = None,
    up: opt.RunUp = None,
    seed: opt.Seed = table.default("seed"),
    max_points: opt.MaxPoints = table.default("max_points"),
    bin_columns: opt.BinColumns = table.default("bin_columns"),
    workers: opt.Workers = None,
    quiet: opt.Quiet = False,
) -> None:
    """Classify point clouds and meshes zero-shot with CLIP (or with a trained adapter / exported engine).

    Results go to stdout (a table on a terminal, JSON Lines in a pipe) or to --output as each
    batch finishes, with the run's description (.NAME.run.json beside the file; a .json output's
    meta). An existing output is refused unless --resume finishes it (same options) or --overwrite
    replaces it; Ctrl-C keeps what is done. Runs under torchrun too (each rank classifies its
    share; rank 0 writes the results in input order).

    Exit code 0 when every file was classified, 1 when some failed, 2 for usage errors, 130 when interrupted.
    """
    import sys

    from rich.console import Console

    from ..engine.outputs import plan_output
    from ..engine.result_files import STDOUT, format_of
    from ..run_spec import describe_run, record
    from ._common import given_on_command_line

    # Everything that can be refused is refused here, before torch or open_clip is imported.
    options = opt.run_options(locals())
    spec = describe_run(**options, given={name for name in options if given_on_command_line(name)})
    to_stdout = output is None or output == STDOUT
    if to_stdout:
        fmt = format_of(None, fmt) if fmt is not None else ("table" if output is None and sys.stdout.isatty() else "jsonl")
    plan = plan_output(output, fmt, resume=resume, overwrite=overwrite, description=record(spec))
    entries = _inputs(paths, recursive, ext)
    console = Console(stderr=True)
    table_out = plan.fmt == "table" or (not to_stdout and not quiet and sys.stdout.isatty())
    outcome = _run(console, spec, entries, plan, table=table_out, quiet=quiet)
    if not outcome.is_main:
        return  # rank 0 reports for every rank
    if table_out:
        _print_table(outcome.results)
    if outcome.dropped:
        console.print(f"[yellow]dropped {outcome.dropped} earlier result(s) of files no longer among the inputs[/]")
    if not quiet and not to_stdout:
        kept = f" ({outcome.reused} kept from the earlier run)" if resume else ""
        console.print(f"wrote {outcome.total} results to {output}{kept}", highlight=False, soft_wrap=True)
    if outcome.failed:
        console.print(f"[yellow]{outcome.failed} of {outcome.total} files failed[/]")
        raise typer.Exit(1)


def _inputs(paths: list[str], recursive: bool, ext: str | None) -> list:
    """Files, folders, patterns and stdin lists expanded in order (unusable ones as error rows)."""
    import sys

    from ..engine.inputs import gather_inputs, read_path_list
    from ..errors import UsageError

    if paths.count("-") > 1:
        raise UsageError("- (read paths from stdin) can be given once")
    if "-" in paths:
        i = paths.index("-")
        paths = paths[:i] + read_path_list(sys.stdin.read()) + paths[i + 1:]
    entries = gather_inputs(paths, recursive=recursive, extensions=ext)
    if not entries:
        shown = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise UsageError(f"no supported point-cloud or mesh files in {shown or 'the paths given'}")
    return entries


def _run(console, spec, entries, plan, *, quiet: bool, table: bool):
    """Load the classifier (unless no input can be classified) and run; Ctrl-C -> exit 130 with a message."""
    import os
    import sys

    from rich.text import Text

    from ..engine.run import ClassifyInterrupted, classify_to_output
    from ._messages import cli_text
    from ._progress import event_display

    if not any(isinstance(e, Path) for e in entries) and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        # nothing to classify (every path missing or unusable): say so at once, without loading anything
        return classify_to_output(None, entries, spec, plan, stream=sys.stdout, collect=table)
    from ..distributed import process_group, resolve_device

    with process_group(resolve_device(spec.device)) as ctx:
        clf, spec = _load(console, spec, ctx)
        n_mine = len(range(ctx.rank, len(entries), ctx.world_size))
        with event_display(console, "classifying", total=n_mine, disable=quiet or not ctx.is_main) as display:
            try:
                return classify_to_output(clf, entries, spec, plan, stream=sys.stdout, collect=table, ctx=ctx,
                                          on_event=display)  # fmt: skip
            except ClassifyInterrupted as e:
                display.stop()
                console.print(Text(cli_text(e.text), style="yellow"), soft_wrap=True, highlight=False)
                raise typer.Exit(130) from None


def _load(console, spec, ctx):
    """The classifier the description names, and the description completed with what it brought."""
    from rich.markup import escape

    from ..models.resolve import load_run_classifier
    from ..run_spec import complete
    from ._messages import cli_text

    with console.status("loading the model", spinner="dots"):
        clf = load_run_classifier(spec, device=ctx.device if ctx.distributed else None)
    spec, warnings = complete(spec, clf)
    for line in warnings:
        console.print(f"[yellow]warning:[/] {escape(cli_text(line))}")
    return clf, spec


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("label")
    table.add_column("prob", justify="right")
    table.add_column("runners-up")
    for r in results:
        if r.ok:
            others = ", ".join(f"{lab} {p:.2f}" for lab, p in r.top_k[1:])
            table.add_row(Text(r.path), Text(r.label), f"{r.probability:.3f}", Text(others))
        else:
            table.add_row(Text(r.path), Text("error", style="bold red"), "", Text(r.error, style="red"))
    Console().print(table)
