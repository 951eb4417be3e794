"""`c2p classify`: zero-shot (or adapter, or exported-engine) classification of files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
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
    labels_file: Annotated[
        Path | None, typer.Option("--labels-file", help="A text file with one label a line (blank lines and # comments skipped).")
    ] = None,
    label_set: opt.LabelSet = None,
    prompt: opt.Prompt = None,
    model: opt.Model = defaults.MODEL,
    pretrained: opt.Pretrained = defaults.PRETRAINED,
    depth_encoder: opt.DepthEncoderPath = None,
    adapter: Annotated[
        Path | None,
        typer.Option(
            "--adapter",
            help="A `c2p fewshot` run folder (brings its model, labels and prompts), or an official CLIP2Point "
            "few-shot checkpoint (.pth: --model/--pretrained name its CLIP, --labels/--label-set its classes, default ModelNet40).",
        ),
    ] = None,
    backend: Annotated[
        opt.Backend, typer.Option("--backend", case_sensitive=False, help="torch, onnx (ONNX Runtime) or trt (TensorRT engine).")
    ] = "torch",
    engine: Annotated[Path | None, typer.Option("--engine", help="A `c2p export` folder, for --backend onnx|trt.")] = None,
    views: opt.Views = defaults.ZERO_SHOT_VIEWS,
    batch_size: opt.BatchSize = 32,
    device: opt.Device = "auto",
    precision: Annotated[
        opt.Precision,
        typer.Option("--precision", case_sensitive=False, help="Encoder precision on CUDA: fp32, or fp16 / bf16 autocast (the projection stays fp32)."),
    ] = "fp32",
    top_k: Annotated[int, typer.Option("--top-k", help="How many labels to report per file.", callback=opt.at_least(1))] = 3,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Results file (.jsonl, .json or .csv, written as each batch finishes), or - for stdout."),
    ] = None,
    fmt: Annotated[
        opt.OutputFormat | None,
        typer.Option("--format", case_sensitive=False,
                     help="Results as jsonl, csv, json or table (default: the --output extension; on stdout a table on a terminal, else jsonl)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the results already in --output (same path, size and mtime) and classify the rest.")
    ] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    ext: Annotated[
        str | None, typer.Option("--ext", help="Only these extensions in folders and patterns, e.g. ply,npy.")
    ] = None,
    points: Annotated[
        int | None,
        typer.Option("--points", help=f"Points sampled per shape (default: the adapter's, else {defaults.NUM_POINTS}).", callback=opt.check_points),
    ] = None,
    sampling: Annotated[
        opt.SamplingChoice | None,
        typer.Option("--sampling", case_sensitive=False, help="random (seeded) or fps (default: the adapter's, else random)."),
    ] = None,
    up: Annotated[
        opt.UpAxisChoice | None,
        typer.Option("--up", case_sensitive=False, help=f"The shapes' up axis, z (ModelNet, scanners, CAD) or y (ShapeNet-style); default: the adapter's, else {defaults.UP_AXIS}."),
    ] = None,
    seed: opt.Seed = 0,
    max_points: opt.MaxPoints = defaults.MAX_POINTS,
    bin_columns: opt.BinColumns = defaults.BIN_COLUMNS,
    workers: opt.Workers = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no table; failed files are still listed on stderr.")] = False,
) -> None:
    """Classify point clouds and meshes zero-shot with CLIP (or with a trained adapter / exported engine).

    Results go to stdout (a table on a terminal, JSON Lines in a pipe) or to --output as each
    batch finishes; Ctrl-C keeps what is done and --resume finishes it. Runs under torchrun too
    (each rank classifies its share; rank 0 writes the results in input order).

    Exit code 0 when every file was classified, 1 when some failed, 2 for usage errors, 130 when interrupted.
    """
    import sys

    from rich.console import Console

    from ..engine.batching import ReadOptions
    from ..engine.inputs import gather_inputs, read_path_list
    from ..engine.pipeline import validate_run_options
    from ..engine.result_files import STDOUT, check_output_path, format_of
    from ..errors import Opt, OptionError, UsageError
    from ._label_sources import resolve_label_options

    console = Console(stderr=True)
    to_stdout = output is None or output == STDOUT
    if resume and to_stdout:
        raise OptionError(Opt("resume"), " needs an output file to resume from")
    if to_stdout:
        fmt = format_of(None, fmt) if fmt is not None else ("table" if output is None and sys.stdout.isatty() else "jsonl")
    else:
        fmt = check_output_path(Path(output), fmt)  # before any model loads: a bad path costs nothing
    # validate what was given before the model loads; unset options are filled in below
    validate_run_options(batch_size, top_k, workers, precision)
    ReadOptions(
        n_points=points or 1, sampling=sampling or "random", seed=seed, up=up or "z",
        max_points=max_points, bin_columns=bin_columns,
    ).validate()
    names = resolve_label_options(labels, labels_file, label_set)
    if paths.count("-") > 1:
        raise UsageError("- (read paths from stdin) can be given once")
    if "-" in paths:
        i = paths.index("-")
        paths = paths[:i] + read_path_list(sys.stdin.read()) + paths[i + 1:]
    entries = gather_inputs(paths, recursive=recursive, extensions=ext)
    if not entries:
        shown = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise UsageError(f"no supported point-cloud or mesh files in {shown or 'the paths given'}")

    from ..distributed import process_group, resolve_device
    from ..engine.pipeline import check_precision

    torch_device = resolve_device(device)
    check_precision(None if precision == "fp32" else precision, torch_device.type, torch_model=backend == "torch")
    with process_group(torch_device) as ctx:
        clf = _build_classifier(
            console, labels=labels if labels_file is None else names, label_set=label_set, names=names, prompt=prompt,
            model=model, pretrained=pretrained, depth_encoder=depth_encoder, adapter=adapter, backend=backend,
            engine=engine, views=views, device=str(ctx.device) if ctx.distributed else device,
        )
        read = _read_options(console, clf, points, sampling, up, seed, max_points, bin_columns)
        used = {"n_points": read.n_points, "sampling": read.sampling, "up": read.up, "seed": read.seed}
        meta = {**(getattr(clf, "meta", None) or {}), "read": used}
        table = fmt == "table" or (not to_stdout and not quiet and sys.stdout.isatty())
        outcome = _run(console, clf, entries, read, batch_size=batch_size, top_k=top_k, workers=workers,
                       precision=None if precision == "fp32" else precision, output=None if to_stdout else Path(output),
                       fmt=fmt, resume=resume, meta=meta, table=table, quiet=quiet, ctx=ctx)
    if not outcome.is_main:
        return  # rank 0 reports for every rank
    if table:
        _print_table(outcome.results)
    if not quiet and not to_stdout:
        kept = f" ({outcome.reused} kept from the earlier run)" if resume else ""
        console.print(f"wrote {outcome.total} results to {output}{kept}", highlight=False, soft_wrap=True)
    if outcome.failed:
        console.print(f"[yellow]{outcome.failed} of {outcome.total} files failed[/]")
        raise typer.Exit(1)


def _read_options(console, clf, points, sampling, up, seed, max_points=defaults.MAX_POINTS, bin_columns=defaults.BIN_COLUMNS):
    """Unset reading options come from the adapter run (its shapes were read that way), else the defaults."""
    from rich.markup import escape

    from ..engine.batching import ReadOptions
    from ..models.adapters import merge_read_settings
    from ._messages import cli_text

    trained = (getattr(clf, "meta", None) or {}).get("read") or {}
    chosen, warnings = merge_read_settings({"n_points": points, "sampling": sampling, "up": up}, trained)
    for line in warnings:
        console.print(f"[yellow]warning:[/] {escape(cli_text(line))}")
    fallback = {"n_points": defaults.NUM_POINTS, "sampling": "random", "up": defaults.UP_AXIS}
    read = ReadOptions(
        seed=seed, max_points=max_points, bin_columns=bin_columns,
        **{k: fallback[k] if v is None else v for k, v in chosen.items()},
    )
    read.validate()
    return read


def _build_classifier(console, *, labels, label_set, names=None, prompt, model, pretrained, depth_encoder, adapter, backend, engine,
                      views, device):
    from ..errors import UsageError

    if backend not in ("torch", "onnx", "trt"):
        raise UsageError(f"--backend must be torch, onnx or trt, got {backend!r}")
    with console.status("loading the model", spinner="dots"):
        if backend != "torch":
            if engine is None:
                raise UsageError(f"--backend {backend} needs --engine DIR (a `c2p export` folder)")
            if adapter is not None or labels or label_set:
                raise UsageError("--engine carries its own labels and adapter: drop --labels/--label-set/--adapter")
            from clip2point.export.runtime import load_exported_classifier

            return load_exported_classifier(engine, backend=backend, device=device)
        if engine is not None:
            raise UsageError("--engine is for --backend onnx or trt")
        if adapter is not None:
            return _adapter_classifier(adapter, labels=labels, label_set=label_set, prompt=prompt, model=model,
                                       pretrained=pretrained, depth_encoder=depth_encoder, device=device)  # fmt: skip
        from ..models.classifier import load_classifier

        return load_classifier(
            labels=names, model=model, pretrained=pretrained, depth_encoder=depth_encoder,
            views=views, templates=prompt, device=device,
        )


def _adapter_classifier(adapter, *, labels, label_set, prompt, model, pretrained, depth_encoder, device):
    """A run folder brings everything but the device: options that it would override are refused, not
    ignored. The official checkpoint holds only adapter weights: the CLIP (--model/--pretrained), the
    labels and the prompts come from the options, as for `c2p eval` and `c2p export`."""
    from ..errors import UsageError
    from ..models.adapters import load_adapter_classifier
    from ._common import given_on_command_line

    if depth_encoder is not None:
        raise UsageError("--adapter brings its own encoders: drop --depth-encoder")
    if Path(adapter).is_file():
        from ..models.prompts import resolve_labels

        if given_on_command_line("views"):
            raise UsageError("the official few-shot checkpoint uses its own 10 views: drop --views")
        names = resolve_labels(labels, label_set) if (labels or label_set) else None
        return load_adapter_classifier(adapter, device=device, labels=names, templates=prompt, model=model, pretrained=pretrained)
    given = {"labels": bool(labels), "label_set": bool(label_set), "prompt": bool(prompt)}
    clash = [n for n in ("labels", "label_set", "prompt", "model", "pretrained", "views") if given.get(n) or given_on_command_line(n)]
    if clash:
        flags = ", ".join("--" + n.replace("_", "-") for n in clash)
        raise UsageError(f"--adapter {adapter} brings its own model, labels, prompts and views: drop {flags}")
    return load_adapter_classifier(adapter, device=device)


def _run(console, clf, entries, read, *, quiet, table, ctx, **kw):
    import sys

    from rich.text import Text

    from ..engine.run import ClassifyInterrupted, classify_to_output
    from ._messages import cli_text
    from ._progress import progress_bar

    n_mine = len(range(ctx.rank, len(entries), ctx.world_size))
    with progress_bar(console, "classifying", disable=quiet or not ctx.is_main) as progress:
        task = progress.add_task("classify", total=n_mine)

        def failed(r):
            if not r.ok:  # one line per failed file, on stderr, even with --quiet
                progress.console.print(Text.assemble(("failed ", "yellow"), r.error or r.path), soft_wrap=True, highlight=False)

        try:
            return classify_to_output(
                clf, entries, read=read, stream=sys.stdout, collect=table, ctx=ctx,
                on_progress=lambda n: progress.advance(task, n), on_result=failed, **kw,
            )
        except ClassifyInterrupted as e:
            progress.stop()
            console.print(Text(cli_text(e.text), style="yellow"), soft_wrap=True, highlight=False)
            raise typer.Exit(130) from None


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
