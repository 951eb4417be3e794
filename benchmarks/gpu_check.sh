#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU, torch, triton, numpy, pytest, onnx, onnxruntime
# (no project install: PYTHONPATH=.; no open_clip / open3d / typer / rich needed).
#
#   bash benchmarks/gpu_check.sh            # every step
#   bash benchmarks/gpu_check.sh tests      # only the named steps (see STEPS below)
#
# Every step runs even if an earlier one failed; the summary lists each step's status and the
# script exits non-zero if any failed. To add a check: write a step_<name> function and append
# <name> to STEPS.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0   # real kernels; tests/conftest.py only sets it when unset
export HF_HUB_OFFLINE=1
PYTHON="${PYTHON:-python3}"

STEPS=(gpu versions render_tests render_bench)

step_gpu() {
    nvidia-smi
}

step_versions() {
    "$PYTHON" - <<'PY'
import importlib, platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
for name in ("triton", "numpy", "pytest", "onnx", "onnxruntime"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "unavailable:", exc)
if not torch.cuda.is_available():
    raise SystemExit("CUDA is not available to torch")
PY
}

step_render_tests() {
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_render_triton.py tests/test_render_reference.py
}

step_render_bench() {
    local rc=0 dtype
    for dtype in float32 float16 bfloat16; do
        "$PYTHON" benchmarks/projection.py --device cuda --out-dtype "$dtype" || rc=1
    done
    "$PYTHON" benchmarks/projection.py --device cuda --out-dtype float16 --channels 3 || rc=1
    "$PYTHON" benchmarks/projection.py --device cuda --views 6 --batch 1024 || rc=1
    return $rc
}

declare -A STATUS=()
ORDER=()
FAILED=0

run_step() {
    local name="$1" start rc
    echo
    echo "===== step: $name ====="
    start=$(date +%s)
    "step_$name"
    rc=$?
    echo "===== end: $name (exit $rc, $(( $(date +%s) - start )) s) ====="
    ORDER+=("$name")
    if [ "$rc" -eq 0 ]; then STATUS[$name]=ok; else STATUS[$name]="FAILED (exit $rc)"; FAILED=1; fi
}

selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${STEPS[@]}")
for name in "${selected[@]}"; do
    if declare -F "step_$name" >/dev/null; then
        run_step "$name"
    else
        echo "unknown step: $name (known: ${STEPS[*]})"
        ORDER+=("$name"); STATUS[$name]="unknown step"; FAILED=1
    fi
done

echo
echo "===== summary ====="
for name in "${ORDER[@]}"; do
    printf '%-20s %s\n' "$name" "${STATUS[$name]}"
done
exit $FAILED
