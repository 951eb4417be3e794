"""Hostile files against a reader implementation: peak RSS above the RSS before the read, and what
the read did (points, error line, or the signal that killed it). Issue 11's cases, small enough
to run in a minute; each read runs in its own process.

    python benchmarks/readers_memory.py                     # this checkout's clip2point.io
    python benchmarks/readers_memory.py --impl oldc2p.io --pythonpath /path/to/old   # another one

Prints one JSON object: {"impl": ..., "cases": [{"case", "file_bytes", "peak_extra_mb",
"x_file", "outcome"}]}. Peak RSS is VmHWM (reset just before the read) minus VmRSS: Linux only.
"""

from __future__ import annotations

import argparse
import io as stdio
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROBE = r"""
import importlib, json, sys
io = importlib.import_module(sys.argv[1])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

io.read_cloud(sys.argv[3], n_points=64)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = status("VmRSS")
try:
    out = io.read_cloud(sys.argv[2], n_points=1024)
    outcome = f"read {len(out)} points"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"extra": status("VmHWM") - before, "outcome": outcome}))
"""


def _rows(n: int) -> bytes:
    block = "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in np.random.default_rng(0).random((1000, 3)).tolist())
    return block.encode() * (n // 1000)


def _zero_npz(path: Path, rows: int) -> None:
    """An .npz whose 'points' member is `rows` x 3 float64 zeros, written as a stream."""
    import zipfile

    head = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (rows, 3)})
    zero = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("points.npy", "w", force_zip64=True) as f:
            f.write(head.getvalue())
            left = rows * 24
            while left:
                f.write(zero[: min(left, len(zero))])
                left -= min(left, len(zero))


def make_cases(d: Path) -> list[tuple[str, Path]]:
    cases = []

    def add(name: str, filename: str, data: bytes | None = None) -> Path:
        path = d / filename
        if data is not None:
            path.write_bytes(data)
        cases.append((name, path))
        return path

    pcd_head = (
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\n"
        "DATA binary_compressed\n"
    )
    # A valid LZF stream of 4 points (48 bytes); the header declares n points.
    payload = b"\x1f" + bytes(32) + b"\x0f" + bytes(16)
    for n in (100_000_000, 100_000):
        head = pcd_head.format(n=n).encode()
        data = head + struct.pack("<II", len(payload), 48) + payload
        add(f"1. compressed PCD, {len(data)}-byte file declaring {n} points (data: 4)", f"lie{n}.pcd", data)
    for rows in (100_000_000, 20_000_000):
        path = add(f"2. npz bomb: zeros ({rows}, 3) float64, inflating to {24 * rows / 1e9:.2f} GB", f"bomb{rows}.npz")
        _zero_npz(path, rows)
    many = stdio.BytesIO()
    np.savez(many, **{f"member_{i:06d}": np.zeros(1) for i in range(20_000)})
    add("2. npz with 20,000 members: error line length", "many.npz", many.getvalue())
    sparse = add("3. 2 GB sparse .ply, not a PLY (magic checked first?)", "sparse.ply")
    with open(sparse, "wb") as f:
        f.write(b"GARBAGE")
        f.truncate(2 << 30)
    n = 400_000
    rows = _rows(n)
    add(f"3. ASCII PLY, {n} points", "a.ply",
        f"ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n".encode() + rows)
    add(f"3. ASCII PCD, {n} points", "a.pcd",
        f"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS {n}\nDATA ascii\n".encode() + rows)
    k = 2_000_000
    add(f"3. OFF with one {k}-vertex polygon", "poly.off",
        f"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n{k} ".encode() + " ".join((np.arange(k) % 3).astype(str)).encode() + b"\n")
    add(f"3. OBJ with one {k}-vertex polygon", "poly.obj",
        b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf " + " ".join((np.arange(k) % 3 + 1).astype(str)).encode() + b"\n")
    nf = 2_000_000
    rng = np.random.default_rng(1)
    ks = rng.integers(3, 5, size=nf).astype(np.uint8)
    parts = bytearray()
    for kk in ks.tolist():
        parts += struct.pack(f"<B{kk}i", kk, *([0, 1, 2, 3][:kk]))
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype="<f4")  # a quad has 4 corners
    add(f"3. binary PLY, {nf}-item mixed triangle/quad list", "mixed.ply",
        (f"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
         f"element face {nf}\nproperty list uchar int vertex_indices\nend_header\n").encode() + verts.tobytes() + bytes(parts))
    add("6. OFF with counts -1 -1 0", "neg.off", b"OFF\n-1 -1 0\n3 0 1 2\n0 0 0\n1 0 0\n0 1 0\n")
    add("6. PCD with POINTS -3", "neg.pcd",
        b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS -3\nDATA ascii\n1 2 3\n4 5 6\n7 8 9\n")
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="clip2point.io", help="module with read_cloud (default clip2point.io)")
    ap.add_argument("--pythonpath", default="", help="prepended to PYTHONPATH for the reads")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        warm = d / "warm.npy"
        np.save(warm, np.random.default_rng(0).normal(size=(100, 3)))
        for name, path in make_cases(d):
            try:
                # cwd: not this checkout, whose folders would shadow --pythonpath (python -c puts cwd first)
                proc = subprocess.run([sys.executable, "-c", PROBE, args.impl, str(path), str(warm)], cwd=d,
                                      capture_output=True, text=True, env=env, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                out.append({"case": name, "outcome": f"still running after {args.timeout:.0f} s"})
                continue
            size = path.stat().st_size
            if proc.returncode != 0:
                sig = -proc.returncode if proc.returncode < 0 else None
                outcome = f"process died (signal {sig})" if sig else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
                out.append({"case": name, "file_bytes": size, "outcome": outcome})
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            text = got["outcome"]
            out.append({
                "case": name, "file_bytes": size, "peak_extra_mb": round(got["extra"] / 2**20, 1),
                "x_file": round(got["extra"] / size, 2),
                "outcome": text if len(text) <= 300 else f"{text[:200]}... ({len(text)} characters)",
            })
            print(json.dumps(out[-1]), file=sys.stderr)
    print(json.dumps({"impl": args.impl, "cases": out}, indent=1))


if __name__ == "__main__":
    main()
