"""Procedural shapes for demos, tests and benchmarks (`c2p synth`).

Every shape is a closed (or, for cups and bowls, open) triangle mesh built from a few primitives:
surfaces of revolution, boxes, tubes. Meshes are z-up, posed with a random yaw about z plus a
small tilt, and scaled within a range that keeps the class recognisable. `random_cloud` turns a
mesh into a scan-like cloud: surface samples, Gaussian noise, and a missing cap (occlusion).

Everything is driven by a numpy Generator, so a dataset is fully determined by its seed; each
sample has its own generator derived from (seed, split, class, index), so adding samples or
classes never changes the existing ones.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import option_table
from .errors import UsageError
from .io import sample_surface, write_off, write_ply

Mesh = tuple[np.ndarray, np.ndarray]

SHAPES: tuple[str, ...] = (
    "cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule", "ring",
    "table", "chair", "mug", "bowl", "bottle",
)  # fmt: skip
FORMATS: tuple[str, ...] = option_table.choices("synth_format")
SPLITS: tuple[str, ...] = ("train", "test")
SYNTH_VERSION = 1
MAX_TILT_DEG = 15.0

# Angular resolution of surfaces of revolution: enough for smooth depth maps at 224 px, small
# enough that hundreds of meshes are built in well under a second.
SEGMENTS = 40


# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------


def _grid_faces(nu: int, nv: int, wrap_u: bool, wrap_v: bool) -> np.ndarray:
    """Two triangles per cell of an nu x nv vertex grid (row-major), optionally wrapping around."""
    iu = np.arange(nu if wrap_u else nu - 1)
    iv = np.arange(nv if wrap_v else nv - 1)
    u0, v0 = np.meshgrid(iu, iv, indexing="ij")
    u1, v1 = (u0 + 1) % nu, (v0 + 1) % nv
    a, b, c, d = u0 * nv + v0, u1 * nv + v0, u1 * nv + v1, u0 * nv + v1
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return tris.astype(np.int64)


def revolve(
    profile: Sequence[tuple[float, float]],
    closed: bool = False,
    segments: int = SEGMENTS,
    start: float = 0.0,
    sweep: float = 2 * math.pi,
) -> Mesh:
    """Surface of revolution about z of a (radius, height) polyline; `closed` joins its ends."""
    prof = np.asarray(profile, dtype=np.float64)
    full = math.isclose(sweep, 2 * math.pi)
    n_ang = segments if full else segments + 1
    ang = start + sweep * np.arange(n_ang) / segments
    r, z = prof[:, 0:1], prof[:, 1:2]
    verts = np.stack([r * np.cos(ang), r * np.sin(ang), np.broadcast_to(z, (len(prof), n_ang))], -1)
    faces = _grid_faces(len(prof), n_ang, wrap_u=closed, wrap_v=full)
    return verts.reshape(-1, 3), faces


def box(size: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Axis-aligned box of the given edge lengths."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    verts = corners * np.asarray(size, dtype=np.float64) + np.asarray(center, dtype=np.float64)
    # Corner index = 4*x + 2*y + z (0/1 bits); each face as two triangles, wound outwards.
    faces = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x = -, +
        [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y = -, +
        [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z = -, +
    ], dtype=np.int64)  # fmt: skip
    return verts, faces


def _arc(
    radius: float, a0: float, a1: float, n: int, cz: float = 0.0, cr: float = 0.0
) -> list[tuple[float, float]]:
    """Points (r, z) of a circular arc in the profile plane, angle measured from +r towards +z."""
    t = np.linspace(a0, a1, n)
    return [(cr + radius * math.cos(a), cz + radius * math.sin(a)) for a in t]


def torus(major: float, minor: float, segments: int = SEGMENTS, sweep: float = 2 * math.pi) -> Mesh:
    """Torus about z (a circle of radius `minor` revolved at distance `major`)."""
    circle = _arc(minor, 0.0, 2 * math.pi, 17, cr=major)[:-1]
    return revolve(circle, closed=True, segments=segments, sweep=sweep)


def merge(*meshes: Mesh) -> Mesh:
    """One mesh holding all the given ones."""
    verts, faces, offset = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _transform(mesh: Mesh, rot: np.ndarray | None = None, shift: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    v, f = mesh
    if rot is not None:
        v = v @ rot.T
    return v + np.asarray(shift, dtype=np.float64), f


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _rot_axis(axis: np.ndarray, a: float) -> np.ndarray:
    """Rodrigues rotation about a unit axis."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=np.float64)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


# ---------------------------------------------------------------------------------------------
# Classes (canonical pose: z-up, resting on z = 0, about unit size)
# ---------------------------------------------------------------------------------------------


def _cube(rng: np.random.Generator) -> Mesh:
    return box(rng.uniform(0.85, 1.15, 3), (0, 0, 0.5))


def _sphere(rng: np.random.Generator) -> Mesh:
    v, f = revolve(_arc(1.0, -math.pi / 2, math.pi / 2, 21))
    return v * rng.uniform(0.92, 1.08, 3), f


def _cylinder(rng: np.random.Generator) -> Mesh:
    r, h = 0.5, rng.uniform(1.2, 2.2)
    return revolve([(0, 0), (r, 0), (r, h), (0, h)])


def _cone(rng: np.random.Generator) -> Mesh:
    r, h = 0.5, rng.uniform(1.0, 1.8)
    return revolve([(0, 0), (r, 0), (0, h)])


def _torus(rng: np.random.Generator) -> Mesh:
    return torus(1.0, rng.uniform(0.22, 0.4))


def _pyramid(rng: np.random.Generator) -> Mesh:
    w, d, h = 1.0, rng.uniform(0.85, 1.15), rng.uniform(0.6, 1.0)
    verts = np.array(
        [[-w / 2, -d / 2, 0], [w / 2, -d / 2, 0], [w / 2, d / 2, 0], [-w / 2, d / 2, 0], [0, 0, h]]
    )
    faces = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]], dtype=np.int64)
    return verts, faces


def _capsule(rng: np.random.Generator) -> Mesh:
    r, length = 0.35, rng.uniform(0.9, 1.6)
    prof = _arc(r, -math.pi / 2, 0, 9, cz=r) + _arc(r, 0, math.pi / 2, 9, cz=r + length)
    return revolve(prof)


def _ring(rng: np.random.Generator) -> Mesh:
    outer, inner, t = 1.0, rng.uniform(0.5, 0.72), rng.uniform(0.05, 0.12)
    return revolve([(inner, 0), (outer, 0), (outer, t), (inner, t)], closed=True)


def _table(rng: np.random.Generator) -> Mesh:
    w, d, h = rng.uniform(1.4, 2.0), rng.uniform(0.8, 1.1), rng.uniform(0.7, 0.9)
    top_t, leg = rng.uniform(0.05, 0.09), rng.uniform(0.06, 0.1)
    parts = [box((w, d, top_t), (0, 0, h - top_t / 2))]
    inset = leg / 2 + 0.04
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(
                box((leg, leg, h - top_t), (sx * (w / 2 - inset), sy * (d / 2 - inset), (h - top_t) / 2))
            )
    return merge(*parts)


def _chair(rng: np.random.Generator) -> Mesh:
    w, seat_h, back_h = rng.uniform(0.45, 0.6), rng.uniform(0.42, 0.5), rng.uniform(0.45, 0.6)
    t, leg = 0.05, 0.045
    parts = [box((w, w, t), (0, 0, seat_h))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box((leg, leg, seat_h), (sx * (w - leg) / 2, sy * (w - leg) / 2, seat_h / 2)))
    parts.append(box((w, t, back_h), (0, (w - t) / 2, seat_h + back_h / 2)))
    return merge(*parts)


def _mug(rng: np.random.Generator) -> Mesh:
    r, h, t = 0.4, rng.uniform(0.8, 1.1), 0.04
    body = revolve([(0, 0), (r, 0), (r, h), (r - t, h), (r - t, t), (0, t)])
    hr = h * rng.uniform(0.25, 0.32)
    handle = torus(hr, 0.07, segments=16, sweep=math.pi)
    # Half a torus in the xz-plane, opening towards the body, on its +x side.
    handle = _transform(handle, _rot_x(math.pi / 2) @ _rot_z(-math.pi / 2), (r, 0, h / 2))
    return merge(body, handle)


def _bowl(rng: np.random.Generator) -> Mesh:
    radius, t = 1.0, 0.05
    depth = rng.uniform(0.55, 0.85) * math.pi / 2
    outer = _arc(radius, -math.pi / 2, -math.pi / 2 + depth, 12, cz=radius)
    inner = _arc(radius - t, -math.pi / 2 + depth, -math.pi / 2, 12, cz=radius)
    return revolve([(0.0, 0.0), *outer[1:], *inner[:-1], (0.0, t)])


def _bottle(rng: np.random.Generator) -> Mesh:
    r, body, neck_r, neck = 0.35, rng.uniform(0.9, 1.3), rng.uniform(0.1, 0.14), rng.uniform(0.3, 0.45)
    shoulder = _arc(r - neck_r, 0, math.pi / 2, 7, cz=body, cr=neck_r)
    return revolve(
        [
            (0, 0),
            (r, 0),
            (r, body),
            *shoulder,
            (neck_r, body + (r - neck_r) + neck),
            (0, body + (r - neck_r) + neck),
        ]
    )


_BUILDERS: dict[str, Callable[[np.random.Generator], Mesh]] = {
    "cube": _cube, "sphere": _sphere, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
    "pyramid": _pyramid, "capsule": _capsule, "ring": _ring, "table": _table, "chair": _chair,
    "mug": _mug, "bowl": _bowl, "bottle": _bottle,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def check_classes(classes: Sequence[str] | None) -> list[str]:
    """The classes to generate (all when None); unknown names raise UsageError listing the valid ones."""
    if not classes:
        return list(SHAPES)
    unknown = [c for c in classes if c not in _BUILDERS]
    if unknown:
        raise UsageError(f"unknown shape class {', '.join(unknown)} (valid: {', '.join(SHAPES)})")
    return list(dict.fromkeys(classes))


def canonical_mesh(name: str, rng: np.random.Generator) -> Mesh:
    """The class's mesh in its canonical pose (z-up, resting on z = 0), with random proportions."""
    check_classes([name])
    v, f = _BUILDERS[name](rng)
    return v.astype(np.float64), f.astype(np.int64)


def random_pose(rng: np.random.Generator, max_tilt_deg: float = MAX_TILT_DEG) -> np.ndarray:
    """Rotation: a uniform yaw about z, then a tilt of at most `max_tilt_deg` about a horizontal axis."""
    yaw = _rot_z(rng.uniform(0, 2 * math.pi))
    phi = rng.uniform(0, 2 * math.pi)
    tilt = _rot_axis(
        np.array([math.cos(phi), math.sin(phi), 0.0]), math.radians(rng.uniform(0, max_tilt_deg))
    )
    return tilt @ yaw


def random_mesh(name: str, rng: np.random.Generator) -> Mesh:
    """A posed mesh of class `name`: float32 vertices [V, 3] (z-up) and int64 triangles [F, 3].

    Random proportions within the class's range, a random yaw about z, a tilt of at most 15
    degrees, a random overall scale (0.5 to 2) and a small offset.
    """
    v, f = canonical_mesh(name, rng)
    v = v - (v.min(axis=0) + v.max(axis=0)) / 2
    v = v @ random_pose(rng).T
    v = v * rng.uniform(0.5, 2.0) + rng.normal(0.0, 0.1, 3)
    return v.astype(np.float32), f


def random_cloud(name: str, rng: np.random.Generator, n_points: int = 2048) -> np.ndarray:
    """A scan-like cloud float32 [n_points, 3] of class `name`.

    Area-weighted surface samples of `random_mesh`, minus a random cap (every point beyond a
    random plane; 0 to 30% of the surface, as if occluded), plus Gaussian noise of a random
    level (0 to 1% of the bounding-box diagonal).
    """
    v, f = random_mesh(name, rng)
    drop = rng.uniform(0.0, 0.3)
    pts = sample_surface(v, f, int(math.ceil(n_points / (1.0 - drop))) + 1, rng).astype(np.float64)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    proj = pts @ direction
    keep = proj <= np.quantile(proj, 1.0 - drop)
    pts = pts[keep]
    pts = pts[rng.choice(len(pts), size=n_points, replace=len(pts) < n_points)]
    diag = float(np.linalg.norm(np.ptp(v, axis=0)))
    pts = pts + rng.normal(0.0, rng.uniform(0.0, 0.01) * diag, pts.shape)
    return pts.astype(np.float32)


def sample_rng(seed: int, split: str, name: str, index: int) -> np.random.Generator:
    """The generator of one sample, derived from (seed, split, class, index) only."""
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(name.encode()), index])


def write_dataset(
    out: str | Path,
    classes: Sequence[str] | None = None,
    per_class: int = 20,
    test_per_class: int = 5,
    fmt: str = "ply",
    n_points: int = 2048,
    seed: int = 0,
    progress: Callable[[Path], None] | None = None,
) -> dict:
    """Write a synthetic dataset and return its manifest (also written as OUT/synth.json).

    Layout: OUT/<split>/<class>/<class>_0001.<fmt> for split in train, test, plus
    OUT/classes.txt (one class a line) and OUT/synth.json. `ply`: binary little-endian PLY of the
    noisy cloud; `npy`: the same cloud as float32 [n, 3]; `off`: the posed mesh itself (no noise,
    ModelNet-like). `progress` is called with each file written.
    """
    from . import __version__

    names = check_classes(classes)
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if per_class < 0 or test_per_class < 0:
        raise UsageError("per-class counts must not be negative")
    if n_points < 1:
        raise UsageError(f"the number of points must be at least 1, got {n_points}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": per_class, "test": test_per_class}
    for split, count in counts.items():
        for name in names:
            folder = out / split / name
            if count:  # no empty class folders for a split without samples
                folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = sample_rng(seed, split, name, i)
                path = folder / f"{name}_{i + 1:04d}.{fmt}"
                if fmt == "off":
                    write_off(path, *random_mesh(name, rng))
                elif fmt == "npy":
                    np.save(path, random_cloud(name, rng, n_points))
                else:
                    write_ply(path, random_cloud(name, rng, n_points))
                if progress is not None:
                    progress(path)
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    manifest = {
        "generator": "c2p synth",
        "version": SYNTH_VERSION,
        "c2p_version": __version__,
        "classes": names,
        "format": fmt,
        "seed": seed,
        "n_points": n_points if fmt != "off" else None,
        "per_class": {"train": per_class, "test": test_per_class},
        "counts": {split: {n: counts[split] for n in names} for split in SPLITS},
        "total": (per_class + test_per_class) * len(names),
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
