"""Writers for the two formats `c2p synth` produces (PLY, OFF): synthetic datasets, examples, tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_NP_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
              "f4": "float", "f8": "double"}  # fmt: skip


def write_ply(
    path: str | Path,
    points: np.ndarray,
    properties: dict[str, np.ndarray] | None = None,
    faces: np.ndarray | None = None,
    fmt: str = "binary_little_endian",
) -> None:
    """Write a PLY file: float32 x/y/z, optional extra per-vertex `properties` (each [N], any of
    the PLY scalar types), optional triangles; `fmt` is ascii, binary_little_endian or
    binary_big_endian."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    cols: list[tuple[str, np.ndarray]] = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    cols += [(k, np.asarray(v).reshape(-1)) for k, v in (properties or {}).items()]
    lines = ["ply", f"format {fmt} 1.0", "comment written by clip2point", f"element vertex {len(pts)}"]
    lines += [f"property {_NP_TO_PLY[a.dtype.str[1:]]} {k}" for k, a in cols]
    tris = None if faces is None else np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if tris is not None:
        lines += [f"element face {len(tris)}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    with open(path, "wb") as fh:
        fh.write(header)
        if fmt == "ascii":
            for i in range(len(pts)):
                fh.write((" ".join(repr(a[i].item()) for _, a in cols) + "\n").encode("ascii"))
            if tris is not None:
                fh.write("".join(f"3 {a} {b} {c}\n" for a, b, c in tris.tolist()).encode("ascii"))
            return
        order = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(k, order + a.dtype.str[1:]) for k, a in cols])
        rec = np.empty(len(pts), dtype=dt)
        for k, a in cols:
            rec[k] = a
        fh.write(rec.tobytes())
        if tris is not None:
            fdt = np.dtype([("n", "u1"), ("idx", order + "i4", (3,))])
            frec = np.empty(len(tris), dtype=fdt)
            frec["n"] = 3
            frec["idx"] = tris
            fh.write(frec.tobytes())


def write_off(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, modelnet_header: bool = False
) -> None:
    """Write an OFF mesh; `modelnet_header` writes ModelNet's broken first line "OFF<nv> <nf> 0"."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    counts = f"{len(v)} {len(f)} 0"
    head = f"OFF{counts}\n" if modelnet_header else f"OFF\n{counts}\n"
    body = "".join(f"{a:.6g} {b:.6g} {c:.6g}\n" for a, b, c in v.tolist())
    body += "".join(f"3 {a} {b} {c}\n" for a, b, c in f.tolist())
    Path(path).write_text(head + body)
