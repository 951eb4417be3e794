"""`c2p env`: versions, devices and usable backends, to paste into a bug report (like `hf env`)."""

from __future__ import annotations

from typing import Annotated

import typer


def env(as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False) -> None:
    """Print package versions (torch, CUDA, triton, open_clip, onnxruntime, TensorRT...), the devices,
    and which backends work here. Offline; a missing or broken package is reported, not an error."""
    import json

    from ._environment import describe

    report = describe()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    t = report["torch"]
    lines = [
        f"- clip2point version: {report['clip2point']}",
        f"- Python: {report['python']}",
        f"- Platform: {report['platform']}",
        f"- CPU cores usable: {report['cpus']}",
        f"- CPU bf16: {_bf16_line(report['cpu_bf16'])}",
    ]
    if "error" in t:
        lines.append(f"- torch: {t['error']}")
    else:
        gpus = ", ".join(t.get("devices") or []) or "none"
        threads = f"{t['threads']} threads" if t.get("threads") else t.get("note", "")
        lines += [
            f"- torch: {t['version']} (CUDA build: {t['cuda_build'] or 'none'}, {threads})",
            f"- CUDA available: {'yes' if t.get('cuda_available') else 'no'}" + (f" ({t['cuda_error']})" if t.get("cuda_error") else ""),
            f"- GPUs: {gpus}",
        ]
        if t.get("cudnn"):
            lines.append(f"- cuDNN: {t['cudnn']}")
    lines.append("- packages:")
    lines += [f"    {name}: {version or 'not installed'}" for name, version in report["packages"].items()]
    lines.append("- backends usable here:")
    lines += [f"    {name}: {state}" for name, state in report["backends"].items()]
    lines.append(f"- cache folder: {report['cache_dir']}")
    if report["environment"]:
        lines.append("- environment:")
        lines += [f"    {k}={v}" for k, v in report["environment"].items()]
    typer.echo("\n".join(lines))


def _bf16_line(bf16: dict) -> str:
    if bf16["native"]:
        return f"native ({', '.join(bf16['flags'])}): --precision bf16 / auto run the encoders about 2x faster"
    return "not native (no avx512_bf16 / amx_bf16 / Arm bf16): encoders run in fp32 on this CPU"
