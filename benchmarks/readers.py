"""Reader throughput: clip2point.io against open3d / trimesh / laspy / numpy (where installed), and
optionally against another clip2point.io (e.g. an older checkout), all in the same run.

    python benchmarks/readers.py                       # this checkout vs the libraries
    python benchmarks/readers.py --baseline-path /old/checkout/parent --baseline-module oldpkg.io

Each reader reads the same file (made here) `--repeat` times; the best time counts. Prints one JSON
object: per format, seconds for each reader and ratios (other / ours: > 1 means ours is faster).
FPS (1M points -> 1024) is timed the same way against the plain O(nN) loop and fpsample.
Workloads of a few seconds at most: run on a quiet machine, and compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def grid_mesh(n: int):
    """A wavy height field of about 2 n^2 triangles."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    v = np.stack([x.ravel(), y.ravel(), 0.1 * np.sin(8 * x.ravel()) * np.cos(6 * y.ravel())], axis=1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return v, f


def timed(row: dict, key: str, fn, repeat: int) -> None:
    """row[key] = best time of fn, or the error it raised (a library that cannot read the file)."""
    try:
        row[key] = best(fn, repeat)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        row[key.removesuffix("_s") + "_error"] = f"{type(e).__name__}: {str(e)[:120]}"


def optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000, help="points of the ASCII point files (issue 12: 200k)")
    ap.add_argument("--binary-points", type=int, default=1_000_000)
    ap.add_argument("--mesh-side", type=int, default=548, help="grid side; 548 gives ~600k triangles (issue 12)")
    ap.add_argument("--fps-points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-path", default=None, help="sys.path entry holding the baseline package")
    ap.add_argument("--baseline-module", default=None, help="baseline module with read_points / read_mesh")
    ap.add_argument("--only", default=None, help="comma-separated format names to run")
    args = ap.parse_args()

    from clip2point import io as ours

    base = None
    if args.baseline_module:
        if args.baseline_path:
            sys.path.insert(0, args.baseline_path)
        base = importlib.import_module(args.baseline_module)
    o3d, trimesh, laspy, fpsample = (optional(m) for m in ("open3d", "trimesh", "laspy", "fpsample"))
    rng = np.random.default_rng(0)
    results = []
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pts = rng.normal(size=(args.points, 3)).astype(np.float32)
        big = rng.normal(size=(args.binary_points, 3)).astype(np.float32)
        v, f = grid_mesh(args.mesh_side)
        files: dict[str, tuple[Path, str]] = {}  # name -> (file, kind: points | mesh)
        # Text files as scanners and CloudCompare write them: x y z nx ny nz, six decimals.
        normals = rng.normal(size=(len(pts), 3))
        rows6 = "".join(
            f"{a:.6f} {b:.6f} {c:.6f} {e:.6f} {f_:.6f} {g:.6f}\n"
            for (a, b, c), (e, f_, g) in zip(pts.tolist(), normals.tolist(), strict=True)
        )
        props = "".join(f"property float {k}\n" for k in ("x", "y", "z", "nx", "ny", "nz"))
        (d / "a.ply").write_text(f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\n{props}end_header\n" + rows6)
        files["ply_ascii"] = (d / "a.ply", "points")
        ours.write_ply(d / "b.ply", big)
        files["ply_binary"] = (d / "b.ply", "points")
        head = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {k}\n"
        head6 = head.replace("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1", "FIELDS x y z normal_x normal_y normal_z\n"
                             "SIZE 4 4 4 4 4 4\nTYPE F F F F F F\nCOUNT 1 1 1 1 1 1")
        (d / "a.pcd").write_text(head6.format(n=len(pts), k="ascii") + rows6)
        files["pcd_ascii"] = (d / "a.pcd", "points")
        (d / "b.pcd").write_bytes(head.format(n=len(big), k="binary").encode() + big.astype("<f4").tobytes())
        files["pcd_binary"] = (d / "b.pcd", "points")
        if o3d is not None:
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
            o3d.io.write_point_cloud(str(d / "c.pcd"), cloud, compressed=True)
            files["pcd_compressed"] = (d / "c.pcd", "points")
        (d / "a.xyz").write_text(rows6)
        files["xyz"] = (d / "a.xyz", "points")
        np.save(d / "b.npy", big)
        files["npy"] = (d / "b.npy", "points")
        ours.write_off(d / "m.off", v, f)
        files["off"] = (d / "m.off", "mesh")
        (d / "m.obj").write_text("".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v.tolist())
                                 + "".join(f"f {a} {b} {c}\n" for a, b, c in (f + 1).tolist()))
        files["obj"] = (d / "m.obj", "mesh")
        if trimesh is not None:
            tm = trimesh.Trimesh(v, f, process=False)
            tm.export(d / "m.stl")
            files["stl_binary"] = (d / "m.stl", "mesh")
            tm.export(d / "m.glb")
            files["glb"] = (d / "m.glb", "mesh")
        # A face list of mixed triangles and quads (the slow Python loop), binary PLY.
        ks = np.random.default_rng(1).integers(3, 5, size=len(f))
        quad = np.concatenate([f, f[:, :1]], axis=1)
        rec = bytearray()
        for k, row in zip(ks.tolist(), quad.tolist(), strict=True):
            rec += bytes([k]) + np.asarray(row[:k], dtype="<i4").tobytes()
        head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\nproperty float y\n"
                f"property float z\nelement face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
        (d / "mixed.ply").write_bytes(head.encode() + v.astype("<f4").tobytes() + bytes(rec))
        files["ply_binary_mixed_faces"] = (d / "mixed.ply", "mesh")
        if laspy is not None:
            header = laspy.LasHeader(point_format=3, version="1.2")
            header.scales, header.offsets = [0.001] * 3, [0.0] * 3
            las = laspy.LasData(header)
            las.x, las.y, las.z = big[:, 0], big[:, 1], big[:, 2]
            las.write(d / "b.las")
            files["las"] = (d / "b.las", "points")

        for name, (path, kind) in files.items():
            if only and name not in only:
                continue
            row = {"format": name, "file_mb": round(path.stat().st_size / 2**20, 1)}
            read = ours.read_mesh if kind == "mesh" else ours.read_points
            row["ours_s"] = best(lambda: read(path), args.repeat)  # noqa: B023
            if base is not None:
                bread = base.read_mesh if kind == "mesh" else base.read_points
                timed(row, "baseline_s", lambda: bread(path), args.repeat)  # noqa: B023
            if o3d is not None and name not in ("npy", "las", "glb"):
                fmt = path.suffix[1:]
                if kind == "mesh":
                    timed(row, "open3d_s", lambda: o3d.io.read_triangle_mesh(str(path)), args.repeat)  # noqa: B023
                else:
                    timed(row, "open3d_s", lambda: o3d.io.read_point_cloud(str(path), format=fmt), args.repeat)  # noqa: B023
            if trimesh is not None and kind == "mesh":
                timed(row, "trimesh_s", lambda: trimesh.load(path, process=False, force="mesh"), args.repeat)  # noqa: B023
            if name == "npy":
                row["numpy_load_s"] = best(lambda: np.load(path), args.repeat)  # noqa: B023
            if name == "las" and laspy is not None:
                row["laspy_read_s"] = best(lambda: laspy.read(path), args.repeat)  # noqa: B023
            for key in [k for k in row if k.endswith("_s") and k != "ours_s"]:
                row[key.removesuffix("_s") + "_over_ours"] = round(row[key] / row["ours_s"], 2)
            for key in [k for k in row if k.endswith("_s")]:
                row[key] = round(row[key], 4)
            results.append(row)
            print(json.dumps(row), file=sys.stderr)

    if not only or "fps" in only:
        cloud = rng.normal(size=(args.fps_points, 3)) * [1.0, 2.0, 0.5]
        row = {"format": "fps_1M_to_1024", "points": args.fps_points}
        row["ours_s"] = best(lambda: ours.farthest_point_sample(cloud, 1024, 0), 1)
        from clip2point.io._fps import _fps_reference

        cols = np.ascontiguousarray((cloud - cloud.mean(0)).T.astype(np.float32))
        row["plain_loop_s"] = best(lambda: _fps_reference(cols, 1024, 5), 1)
        row["same_points_as_plain_loop"] = bool(np.array_equal(
            ours.farthest_point_sample(cloud, 1024, 0),
            cloud[_fps_reference(np.ascontiguousarray((cloud - cloud.mean(0)).T.astype(np.float32)), 1024,
                                 int(np.random.default_rng(0).integers(len(cloud))))],
        ))
        if fpsample is not None:
            row["fpsample_bucket_s"] = best(lambda: fpsample.bucket_fps_kdline_sampling(cols.T, 1024, h=7, start_idx=5), 1)
            row["fpsample_vanilla_s"] = best(lambda: fpsample.fps_sampling(cols.T, 1024, start_idx=5), 1)
        for key in [k for k in row if k.endswith("_s") and k != "ours_s"]:
            row[key.removesuffix("_s") + "_over_ours"] = round(row[key] / row["ours_s"], 2)
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"readers": results}, indent=1))


if __name__ == "__main__":
    main()
