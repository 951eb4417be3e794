"""Write the small example scans of examples/scans/ (what `make demo` classifies).

One shape per class of the demo's label list, each in a different file format, named after its
true class. Reproducible: everything comes from fixed seeds. Run from anywhere:

    python examples/make_examples.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from clip2point.io import write_off, write_ply
from clip2point.synth import random_cloud, random_mesh

HERE = Path(__file__).resolve().parent
N_POINTS = 1500
N_TEXT_POINTS = 1024  # text formats take ~30 bytes a point


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng([2024, i])


def cube_ply(path: Path) -> None:
    """Binary little-endian PLY in millimetres far from the origin, with intensity and colour, like a scanner export."""
    rng = _rng(0)
    pts = random_cloud("cube", rng, N_POINTS).astype(np.float64) * 250.0 + np.array([1200.0, -340.0, 95.0])
    height = (pts[:, 2] - pts[:, 2].min()) / np.ptp(pts[:, 2])
    props = {
        "intensity": rng.uniform(0.2, 1.0, len(pts)).astype(np.float32),
        "red": (60 + 180 * height).astype(np.uint8),
        "green": np.full(len(pts), 120, dtype=np.uint8),
        "blue": (240 - 180 * height).astype(np.uint8),
    }
    write_ply(path, pts, props)


def sphere_pcd(path: Path) -> None:
    """ASCII PCD (Point Cloud Library) with an intensity field."""
    rng = _rng(1)
    pts = random_cloud("sphere", rng, N_TEXT_POINTS)
    intensity = rng.uniform(0, 255, len(pts))
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\n"
        f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {len(pts)}\nDATA ascii\n"
    )
    rows = "".join(
        f"{x:.4f} {y:.4f} {z:.4f} {i:.0f}\n" for (x, y, z), i in zip(pts.tolist(), intensity, strict=True)
    )
    path.write_text(header + rows)


def cylinder_xyz(path: Path) -> None:
    """Comma-separated text with a header line and extra columns (normals left at zero)."""
    pts = random_cloud("cylinder", _rng(2), N_TEXT_POINTS)
    rows = "".join(f"{x:.4f},{y:.4f},{z:.4f},0,0,0\n" for x, y, z in pts.tolist())
    path.write_text("x,y,z,nx,ny,nz\n" + rows)


def cone_npy(path: Path) -> None:
    """Plain float32 [N, 3] numpy array."""
    np.save(path, random_cloud("cone", _rng(3), N_POINTS))


def pyramid_npz(path: Path) -> None:
    """Compressed numpy archive with the cloud under the key `points` and a per-point label array."""
    pts = random_cloud("pyramid", _rng(4), N_POINTS)
    np.savez_compressed(path, points=pts, labels=np.zeros(len(pts), dtype=np.int32))


def torus_off(path: Path) -> None:
    """The mesh itself, with ModelNet's broken header ("OFF<nv> <nf> 0" on one line)."""
    write_off(path, *random_mesh("torus", _rng(5)), modelnet_header=True)


def capsule_obj(path: Path) -> None:
    """Wavefront OBJ mesh with a comment and an object name."""
    v, f = random_mesh("capsule", _rng(6))
    lines = ["# capsule, written by examples/make_examples.py", "o capsule"]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in v.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f.tolist()]
    path.write_text("\n".join(lines) + "\n")


def ring_stl(path: Path) -> None:
    """Binary STL (triangle soup with facet normals)."""
    v, f = random_mesh("ring", _rng(7))
    tri = v[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    rec = np.zeros(len(f), dtype=[("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["n"], rec["v"] = normals, tri
    header = b"binary STL of a ring, written by examples/make_examples.py".ljust(80, b" ")
    path.write_bytes(header + np.uint32(len(f)).tobytes() + rec.tobytes())


WRITERS = {
    "cube.ply": cube_ply,
    "sphere.pcd": sphere_pcd,
    "cylinder.xyz": cylinder_xyz,
    "cone.npy": cone_npy,
    "pyramid.npz": pyramid_npz,
    "torus.off": torus_off,
    "capsule.obj": capsule_obj,
    "ring.stl": ring_stl,
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, write in WRITERS.items():
        write(out / name)
        print(f"{out / name}: {(out / name).stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "scans")
