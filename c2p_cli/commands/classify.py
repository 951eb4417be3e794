"""`c2p classify`: zero-shot (or adapter, or exported-engine) classification of files and folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
from .. import options as opt


def classify(
    paths: Annotated[list[Path], typer.Argument(help="Point-cloud / mesh files and folders.", show_default=False)],
    labels: opt.Labels = None,
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
    top_k: Annotated[int, typer.Option("--top-k", help="How many labels to report per file.", callback=opt.at_least(1))] = 3,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results to .jsonl, .json or .csv.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")] = False,
) -> None:
    """Classify point clouds and meshes zero-shot with CLIP (or with a trained adapter / exported engine).

    Exit code 0 when every file was classified, 1 when some failed, 2 for usage errors.
    """
    from rich.console import Console

    from ..batching import ReadOptions, gather_inputs, in_input_order
    from ..errors import UsageError
    from ..results_io import check_output_path, write_results

    console = Console(stderr=True)
    if output is not None:
        check_output_path(output)
    # validate what was given before the model loads; unset options are filled in below
    ReadOptions(
        n_points=points or 1, sampling=sampling or "random", seed=seed, up=up or "z",
        max_points=max_points, bin_columns=bin_columns,
    ).validate()
    entries = gather_inputs(paths, recursive=recursive)
    files = [e for e in entries if isinstance(e, Path)]
    if not entries:
        raise UsageError(f"no supported point-cloud or mesh files in {', '.join(map(str, paths))}")

    clf = _build_classifier(
        console, labels=labels, label_set=label_set, prompt=prompt, model=model, pretrained=pretrained,
        depth_encoder=depth_encoder, adapter=adapter, backend=backend, engine=engine, views=views, device=device,
    )
    read = _read_options(console, clf, points, sampling, up, seed, max_points, bin_columns)
    results = in_input_order(entries, _run(console, clf, files, read, batch_size, top_k, workers, quiet) if files else [])

    if not quiet:
        _print_table(results)
    if output is not None:
        used = {"n_points": read.n_points, "sampling": read.sampling, "up": read.up, "seed": read.seed}
        write_results(output, results, meta={**(getattr(clf, "meta", None) or {}), "read": used})
        console.print(f"wrote {len(results)} results to {output}")
    failed = sum(not r.ok for r in results)
    if failed:
        console.print(f"[yellow]{failed} of {len(results)} files failed[/]")
        raise typer.Exit(1)


def _read_options(console, clf, points, sampling, up, seed, max_points=defaults.MAX_POINTS, bin_columns=defaults.BIN_COLUMNS):
    """Unset reading options come from the adapter run (its shapes were read that way), else the defaults."""
    from rich.markup import escape

    from ..adapters import merge_read_settings
    from ..batching import ReadOptions
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


def _build_classifier(console, *, labels, label_set, prompt, model, pretrained, depth_encoder, adapter, backend, engine, views, device):
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
        from ..classifier import load_classifier

        return load_classifier(
            labels=labels, label_set=label_set, model=model, pretrained=pretrained, depth_encoder=depth_encoder,
            views=views, templates=prompt, device=device,
        )


def _adapter_classifier(adapter, *, labels, label_set, prompt, model, pretrained, depth_encoder, device):
    """A run folder brings everything but the device: options that it would override are refused, not
    ignored. The official checkpoint holds only adapter weights: the CLIP (--model/--pretrained), the
    labels and the prompts come from the options, as for `c2p eval` and `c2p export`."""
    from ..adapters import load_adapter_classifier
    from ..errors import UsageError
    from ._common import given_on_command_line

    if depth_encoder is not None:
        raise UsageError("--adapter brings its own encoders: drop --depth-encoder")
    if Path(adapter).is_file():
        from ..prompts import resolve_labels

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


def _run(console, clf, files, read, batch_size, top_k, workers, quiet):
    from ..pipeline import classify_files
    from ..progress import progress_bar

    results = []
    with progress_bar(console, "classifying", disable=quiet) as progress:
        task = progress.add_task("classify", total=len(files))
        for r in classify_files(
            clf, files, read=read, batch_size=batch_size, top_k=top_k, workers=workers,
            on_progress=lambda n: progress.advance(task, n),
        ):
            results.append(r)
    return results


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
