"""`c2p export`: ONNX graphs (checked against torch) and optionally a TensorRT engine, in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from . import _options as opt


def export(
    output: Annotated[Path, opt.output("Output folder (created).", show_default=False)],
    labels: opt.Labels = None,
    labels_file: opt.LabelsFile = None,
    label_set: opt.LabelSet = None,
    templates: opt.Prompt = None,
    adapter: opt.Adapter = None,
    which: opt.WhichOption = table.default("which"),
    model: opt.Model = table.default("model"),
    pretrained: opt.Pretrained = table.default("pretrained"),
    depth_encoder: opt.DepthEncoderPath = None,
    views: opt.RunViews = None,
    fold: Annotated[
        bool | None,
        typer.Option("--fold/--no-fold", help="Fold CLIP's normalisation into a 1-channel first convolution (default: fold)."),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18 or later: ScatterElements with min reduction).")] = 18,
    quantize: Annotated[
        opt.Quantize,
        typer.Option(
            "--quantize", case_sensitive=False,
            help="int8: also write dynamically quantised graphs (*.int8.onnx: MatMul/Gemm weights in int8, the renderer "
            "float32), used by --backend onnx. Their accuracy on real CLIP weights was not measured here.",
        ),
    ] = "none",
    with_projection: Annotated[
        bool,
        typer.Option("--with-projection", help="Also write points_classifier.onnx: points -> logits with the renderer traced in."),
    ] = False,
    trt: Annotated[bool, typer.Option("--trt", help="Also build a TensorRT FP16 engine (needs TensorRT 10 and an NVIDIA GPU).")] = False,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest batch of the TensorRT optimisation profile.", callback=opt.check_batch)
    ] = 64,
    opt_batch: Annotated[
        int | None,
        typer.Option("--opt-batch", help="Batch TensorRT tunes for (default: a power of two near --max-batch / 2).", callback=opt.check_batch),
    ] = None,
    workspace_gib: Annotated[
        float, typer.Option("--workspace-gib", help="TensorRT builder workspace limit, GiB.", callback=opt.between(0, 1024, open_low=True))
    ] = 4.0,
    n_points: opt.RunPoints = None,
) -> None:
    """Export the classifier: classifier.onnx (depth maps -> logits), optional points_classifier.onnx and TensorRT engine.

    Zero-shot with --labels / --labels-file / --label-set, or few-shot with --adapter RUN. --points is
    what runtimes sample per shape.

    Every graph is run with ONNX Runtime (and the engine with TensorRT) on random and synthetic inputs and compared with torch; the export fails if the logits differ by more than the tolerance recorded in c2p_export.json.
    """
    from rich.console import Console

    from ..errors import UsageError
    from ..run_spec import describe_run
    from ._common import given_on_command_line
    from ._progress import status as progress_status

    options = opt.run_options(locals())
    spec = describe_run(**options, given={name for name in options if given_on_command_line(name)})
    if adapter is not None and fold is not None:
        raise UsageError("--adapter brings its own encoders: drop --fold/--no-fold")
    console = Console(stderr=True)
    if opset < 18:
        raise UsageError(f"--opset must be at least 18 (ScatterElements with reduction='min'), got {opset}")
    if quantize == "int8":
        # before minutes of export work: the quantisation tools come with onnxruntime
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--quantize int8 needs onnxruntime's quantization tools: pip install 'clip2point[onnx]'")
    if trt:
        # Before minutes of export work: say at once when TensorRT or the GPU is missing.
        from clip2point.export.metadata import profile_batches
        from clip2point.export.tensorrt import import_tensorrt, require_cuda

        profile_batches(max_batch, opt_batch)
        import_tensorrt()
        require_cuda()

    from clip2point.export.onnx import ExportOptions, export_classifier

    from ..models.resolve import load_run_classifier
    from ..run_spec import complete

    with progress_status(console, "loading the model") as status:
        clf = load_run_classifier(spec, device="cpu", fold=True if fold is None else fold)
        spec, _ = complete(spec, clf)
        extra = {"adapter": str(adapter)} if adapter is not None else {}
        options = ExportOptions(opset=opset, with_projection=with_projection, n_points=int(spec.n_points),
                                quantize=None if quantize == "none" else quantize)  # fmt: skip
        meta = export_classifier(clf, output, options, extra_meta=extra, on_step=status.update)
        if trt:
            from clip2point.export.tensorrt import build_and_check

            status.update(f"building the TensorRT engine (FP16, batch 1..{max_batch})")
            meta = build_and_check(output, max_batch=max_batch, opt_batch=opt_batch, workspace_gib=workspace_gib)
    _summary(Console(), output, meta)


def _summary(console, out: Path, meta: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from clip2point.export import metadata as md

    table = Table(title=f"c2p export -> {out}")
    table.add_column("artefact", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("inputs")
    table.add_column("max |diff|", justify="right")
    table.add_column("tolerance (int8: agreement)", justify="right")
    table.add_column("check")
    checks = dict(meta.get("check", {}))
    if "tensorrt" in meta and "check" in meta["tensorrt"]:
        checks["engine"] = meta["tensorrt"]["check"]
    for name, entry in meta["graphs"].items():
        size = f"{entry['bytes'] / 2**20:.1f} MiB"
        inputs = ", ".join(
            f"{k}[{','.join(str(d) for d in shape)}]" for k, shape in entry.get("inputs", {}).items()
        ) or "depth (engine profile)"
        check = checks.get(name)
        if check and name.endswith("_int8"):
            agree = f"top-1 {check['argmax_agreement']:.0%}, max prob diff {check['max_prob_diff']:.2g}"
            verdict = Text("recorded" if check["passed"] else "FAILED", style="green" if check["passed"] else "bold red")
            table.add_row(entry["file"], size, Text(inputs), f"{check['max_abs_diff']:.2e}", agree, verdict)
        elif check:
            tol = max(r["tolerance"] for r in check["runs"])
            verdict = Text("passed" if check["passed"] else "FAILED", style="green" if check["passed"] else "bold red")
            table.add_row(entry["file"], size, Text(inputs), f"{check['max_abs_diff']:.2e}", f"{tol:.2e}", verdict)
        else:
            table.add_row(entry["file"], size, Text(inputs), "", "", "not checked")
    table.add_row(md.METADATA_FILE, "", "labels, views, normalisation, models, checks", "", "", "")
    console.print(table)
    precision = " (int8 graphs by default)" if meta.get("precision") == "int8" else ""
    console.print(f"{len(meta['labels'])} labels, {meta['num_views']} views, {meta['in_channels']}-channel input; "
                  f"classify with: c2p classify --backend onnx --engine {out} FILES{precision}")  # fmt: skip
