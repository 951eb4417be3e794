"""Image-depth pairs for pre-training: two on-disk layouts, the writer of ours, the training samples.

A *pairs set* is a list of 3D models, each with a point cloud and RGB renders from the paper's
10 pre-training views (`clip2point.views.FEW_SHOT_VIEWS_10`, in that order: view id k is the k-th
(elevation, azimuth) of the preset). Renders and points share one frame, so the depth map of the
points from view k lines up with render k.

Layout "c2p" (this project's; written by `c2p make-pairs` and `c2p synth --pairs`):

    OUT/pairs.json            {"format": "c2p-pairs", "version": 1, "views": [[e, a], ...],
                               "image_size": 224, "up": "z", "points": 8192,
                               "models": [{"id", "label", "source", "views": [0..9]}, ...],
                               "skipped": [{"source", "problem"}, ...]}
    OUT/<id>/points.npy       float32 [P, 3] surface samples, normalised into the unit sphere
    OUT/<id>/view_<k>.png     RGB render of view k (224 x 224, white background)

Layout "clip2point" (the authors' ShapeNet-55 data; assumed from their public code, since the
renders were never published with a description):

    ROOT/ShapeNet55/ShapeNet-55/{train,test}.txt   one "<synset>-<model>.npy" per line
    ROOT/ShapeNet55/shapenet_pc/<synset>-<model>.npy   Point-BERT's 8192-point clouds (y-up)
    ROOT/rendering/<synset>_<model>/<k>.png        render of view k, k = 0..9

Every part of that layout is configurable (`Clip2PointLayout`), the view file names through a
pattern with the fields {synset}, {model}, {name} (= "<synset>-<model>") and {view}. Models
without all 10 renders or without their cloud are skipped and listed in `PairsIndex.skipped`.

In both layouts every model's cloud header and renders are checked when the set is opened
(`model_problem`); a model with an unreadable file is skipped and listed in `PairsIndex.skipped`
with a one-line problem naming the file, so one bad file never aborts a pre-training run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip2point import defaults, option_table
from clip2point.errors import C2PError, DatasetError, InputFileError, Opt, OptionError
from clip2point.views import FEW_SHOT_VIEWS_10, View, apply_up_axis, camera_basis

PAIRS_FORMAT = "c2p-pairs"
PAIRS_VERSION = 1
PAIRS_FILE = "pairs.json"
LAYOUTS = ("auto", "c2p", "clip2point")
DEFAULT_PAIR_POINTS = 8192
COLOURS = option_table.choices("colour")


@dataclass
class PairModel:
    """One model of a pairs set: its cloud file, its render files (by view id), its label if known."""

    id: str
    points_path: Path
    image_paths: tuple[Path, ...]
    label: str | None = None
    source: str | None = None


@dataclass
class PairsIndex:
    """The models of a pairs set, the views their renders were made from, and what was skipped."""

    root: Path
    layout: str
    views: tuple[View, ...]
    models: list[PairModel]
    up: str = "y"
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.models)

    def fingerprint(self) -> str:
        """Changes when a model, a render file or its size / modification time changes (cache keys)."""
        import hashlib

        h = hashlib.sha256(f"{self.layout}|{self.views}".encode())
        for m in self.models:
            h.update(m.id.encode())
            for p in m.image_paths:
                st = p.stat()
                h.update(f"|{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def open_pairs(path: str | Path, layout: str = "auto", split: str = "train", **clip2point_options) -> PairsIndex:
    """Open a pairs set: `c2p` (a folder with pairs.json), `clip2point` (ShapeNet-55 + renders), or `auto`.

    `split` and `clip2point_options` (fields of `Clip2PointLayout`) apply to the clip2point layout.
    Raises `DatasetError` naming the folder and what is missing.
    """
    root = Path(path)
    if layout not in LAYOUTS:
        raise OptionError(Opt("layout"), f" must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if layout == "auto":
        layout = "c2p" if (root / PAIRS_FILE).is_file() else "clip2point"
    if layout == "c2p":
        return read_c2p_pairs(root)
    return read_clip2point_pairs(root, Clip2PointLayout(split=split, **clip2point_options))


def read_c2p_pairs(root: str | Path) -> PairsIndex:
    """This project's layout (see the module docstring)."""
    from clip2point.store.checkpoints import read_json

    root = Path(root)
    try:
        meta = read_json(root / PAIRS_FILE)
    except C2PError as e:
        raise DatasetError(str(e)) from e
    if meta.get("format") != PAIRS_FORMAT:
        raise DatasetError(f"{root / PAIRS_FILE}: not a c2p pairs file (format {meta.get('format')!r})")
    views = tuple(tuple(v) for v in meta.get("views", FEW_SHOT_VIEWS_10))
    models = []
    for entry in meta.get("models", []):
        mid = str(entry["id"])
        folder = root / mid
        models.append(
            PairModel(
                id=mid,
                points_path=folder / "points.npy",
                image_paths=tuple(folder / f"view_{k}.png" for k in entry.get("views", range(len(views)))),
                label=entry.get("label"),
                source=entry.get("source"),
            )
        )
    if not models:
        raise DatasetError(f"{root / PAIRS_FILE}: lists no models")
    skipped = list(meta.get("skipped", []))
    models = keep_readable(models, skipped)
    if not models:
        raise DatasetError(f"{root / PAIRS_FILE}: no usable model (first problem: {skipped[-1]['problem']})")
    return PairsIndex(root, "c2p", views, models, up=str(meta.get("up", "y")), skipped=skipped)


def model_problem(model: PairModel) -> str | None:
    """Why a model of a pairs set cannot be trained on (one line naming the file), or None.

    Cheap checks made when a pairs set is opened, so that one bad file is skipped up front instead
    of aborting a run mid-epoch: the cloud's .npy header (read through a memory map, no pickles)
    must describe a numeric [P, >=3] array with P >= 2 that fits the file, and every render must be
    an image PIL can verify (chunk structure and checksums, without decoding the pixels).
    """
    from PIL import Image, UnidentifiedImageError

    path = model.points_path
    if not path.is_file():
        return f"{path}: missing"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        return f"{path}: not a readable .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] < 3 or arr.shape[0] < 2:
        return f"{path}: expected a [P, 3] array of points, got shape {getattr(arr, 'shape', None)}"
    if not np.issubdtype(arr.dtype, np.number):
        return f"{path}: expected numeric points, got dtype {arr.dtype}"
    for image in model.image_paths:
        if not image.is_file():
            return f"{image}: missing"
        try:
            with Image.open(image) as im:
                im.verify()
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
            # PIL reports broken PNG chunks as SyntaxError.
            return f"{image}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def keep_readable(models: list[PairModel], skipped: list[dict]) -> list[PairModel]:
    """The models without a `model_problem`; the others go to `skipped` as {"source", "problem"}."""
    good = []
    for m in models:
        problem = model_problem(m)
        if problem is None:
            good.append(m)
        else:
            skipped.append({"source": m.source or m.id, "problem": problem})
    return good


@dataclass(frozen=True)
class Clip2PointLayout:
    """Where the clip2point layout keeps its parts, relative to the root (defaults: the authors' code)."""

    split: str = "train"
    list_dir: str = "ShapeNet55/ShapeNet-55"
    points_dir: str = "ShapeNet55/shapenet_pc"
    render_dir: str = "rendering"
    view_pattern: str = "{synset}_{model}/{view}.png"
    num_views: int = 10


def read_clip2point_pairs(root: str | Path, layout: Clip2PointLayout = Clip2PointLayout()) -> PairsIndex:
    """CLIP2Point's ShapeNet-55 pairs (see the module docstring); label = the synset id."""
    root = Path(root)
    list_file = root / layout.list_dir / f"{layout.split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{root}: no split list {list_file.relative_to(root)} (clip2point layout)")
    views = FEW_SHOT_VIEWS_10[: layout.num_views]
    models, skipped = [], []
    for line in list_file.read_text().splitlines():
        name = line.strip()
        if not name:
            continue
        stem = name[:-4] if name.endswith(".npy") else name
        synset, _, model = stem.partition("-")
        points_path = root / layout.points_dir / (stem + ".npy")
        images = tuple(
            root / layout.render_dir / layout.view_pattern.format(synset=synset, model=model, name=stem, view=k)
            for k in range(len(views))
        )
        missing = [p for p in (points_path, *images) if not p.is_file()]
        if missing:
            skipped.append({"source": stem, "problem": f"missing {missing[0].relative_to(root)}"})
            continue
        models.append(PairModel(stem, points_path, images, label=synset, source=stem))
    models = keep_readable(models, skipped)
    if not models:
        hint = f" (first problem: {skipped[0]['problem']})" if skipped else ""
        raise DatasetError(f"{root}: no usable model in {list_file.relative_to(root)}{hint}")
    return PairsIndex(root, "clip2point", views, models, up="y", skipped=skipped)


def load_points(path: Path) -> np.ndarray:
    """float32 [P, 3] from a pairs cloud (.npy); extra columns (normals) are dropped."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputFileError(path, f"not a readable .npy array ({e})") from e
    if arr.ndim != 2 or arr.shape[1] < 3 or len(arr) < 2:
        raise InputFileError(path, f"expected a [P, 3] array of points, got shape {arr.shape}")
    arr = arr[:, :3].astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputFileError(path, "holds NaN or Inf coordinates")
    return arr


def load_image(path: Path, image_size: int = defaults.IMAGE_SIZE) -> np.ndarray:
    """uint8 [S, S, 3] RGB; transparency is composited on white, other sizes are resized (bicubic)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise InputFileError(path, f"not a readable image ({e})") from e


def image_to_tensor(image: np.ndarray):
    """uint8 [S, S, 3] -> float32 [3, S, S] normalised with CLIP's mean and std (the image encoder's input)."""
    import torch

    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(defaults.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(defaults.CLIP_STD).view(3, 1, 1)
    return (t - mean) / std


def normalize_sample(points: np.ndarray) -> np.ndarray:
    """Centre and scale a subsampled cloud into the unit sphere (as `io.read_cloud` does at test time)."""
    from clip2point.io import normalize_unit_sphere

    return normalize_unit_sphere(points)


class PretrainSamples:
    """Training samples of a pairs set: map-style dataset of dicts (torch DataLoader friendly).

    Item i of epoch e (`set_epoch`) draws, from a generator seeded with (seed, e, i) so that any
    worker / rank / resumed run sees the same sample: the view id, the two camera distances
    d = 1 + u / 5 with u ~ U(-0.5, 0.5), and `n_points` points without replacement (re-normalised
    into the unit sphere). Fields: `index`, `view`, `points` float32 [n, 3], `distances` float32
    [2], and with `with_images` the render `image` float32 [3, S, S] (CLIP-normalised).
    """

    def __init__(
        self,
        index: PairsIndex,
        n_points: int = defaults.NUM_POINTS,
        seed: int = 0,
        with_images: bool = False,
        image_size: int = defaults.IMAGE_SIZE,
    ):
        self.index = index
        self.n_points = int(n_points)
        self.seed = int(seed)
        self.with_images = with_images
        self.image_size = image_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def draw(self, i: int) -> tuple[int, np.ndarray, np.random.Generator]:
        """The view id and distances of item i this epoch, and the generator for its points."""
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        view = int(rng.integers(len(self.index.models[i].image_paths)))
        distances = (defaults.CAMERA_DISTANCE * (1.0 + rng.uniform(-0.5, 0.5, size=2) / 5.0)).astype(np.float32)
        return view, distances, rng

    def __getitem__(self, i: int) -> dict:
        import torch

        model = self.index.models[i]
        view, distances, rng = self.draw(i)
        points = load_points(model.points_path)
        if len(points) > self.n_points:
            points = points[rng.choice(len(points), size=self.n_points, replace=False)]
        elif len(points) < self.n_points:
            # Too few points: repeat some (a z-buffer renders duplicates once), so batches stack.
            points = points[np.concatenate([np.arange(len(points)), rng.integers(len(points), size=self.n_points - len(points))])]
        item = {
            "index": i,
            "view": view,
            "points": torch.from_numpy(normalize_sample(points)),
            "distances": torch.from_numpy(distances),
        }
        if self.with_images:
            item["image"] = image_to_tensor(load_image(model.image_paths[view], self.image_size))
        return item


# ---------------------------------------------------------------------------------------------
# Writing (c2p make-pairs, c2p synth --pairs)
# ---------------------------------------------------------------------------------------------


def safe_id(text: str) -> str:
    """A folder name made of [A-Za-z0-9._-] (other characters become '_')."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"
    return out


def render_pair_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    n_points: int = DEFAULT_PAIR_POINTS,
    views: Sequence[View] = FEW_SHOT_VIEWS_10,
    up: str = defaults.UP_AXIS,
    image_size: int = defaults.IMAGE_SIZE,
    colour: str = "grey",
    seed: int | Sequence[int] = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Surface samples float32 [n_points, 3] and RGB renders uint8 [V, S, S, 3] of one mesh, in one frame.

    The mesh is turned so that `up` becomes +y, then mesh and samples are centred and scaled by
    the samples (like `io.read_cloud` normalises a cloud). One light direction per view and, for
    `colour="random"`, the base colour are drawn from a generator seeded with `seed`.
    """
    from clip2point.io import sample_surface

    from .mesh_render import MeshRenderer, base_colour, normalise_with_points, random_light

    if colour not in COLOURS:
        raise OptionError(Opt("colour"), f" must be one of {', '.join(COLOURS)}, got {colour!r}")
    rng = np.random.default_rng(seed)
    points = sample_surface(vertices, faces, n_points, rng)
    verts = apply_up_axis(np.asarray(vertices, dtype=np.float32), up)
    points = apply_up_axis(points.astype(np.float32), up)
    verts, points = normalise_with_points(verts, points)
    rgb = base_colour(rng if colour == "random" else None)
    renderer = MeshRenderer(verts, faces, image_size=image_size, colour=rgb)
    bases = np.stack([camera_basis(e, a) for e, a in views])
    lights = np.stack([random_light(rng) for _ in views])
    return points, renderer.render(bases, lights)


def write_model(folder: Path, points: np.ndarray, images: np.ndarray) -> None:
    """OUT/<id>/points.npy and view_<k>.png (written to temporary names first, then renamed)."""
    import os

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        tmp = folder / f".view_{k}.png.tmp"
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, folder / f"view_{k}.png")
    tmp = folder / ".points.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(points, dtype=np.float32))
    os.replace(tmp, folder / "points.npy")


@dataclass
class MeshSource:
    """A mesh to turn into a pair: a file, or in-memory arrays (procedural shapes)."""

    id: str
    label: str | None = None
    path: Path | None = None
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        if self.vertices is not None and self.faces is not None:
            return self.vertices, self.faces
        from clip2point.io import read_mesh

        return read_mesh(self.path)


def mesh_sources(mesh_dir: str | Path) -> list[MeshSource]:
    """Mesh files under a folder (recursively), with ids from their relative paths.

    Label: the first folder below `mesh_dir` (e.g. ModelNet40/chair/train/x.off -> chair); files
    directly in `mesh_dir` have none. Raises `InputFileError` when the folder holds no mesh.
    """
    from clip2point.io import MESH_EXTENSIONS

    root = Path(mesh_dir)
    if not root.is_dir():
        raise InputFileError(root, "not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS)
    if not files:
        raise InputFileError(root, f"holds no mesh file ({', '.join(MESH_EXTENSIONS)})")
    sources, seen = [], set()
    for p in files:
        rel = p.relative_to(root)
        base = safe_id("__".join(rel.with_suffix("").parts))
        mid, n = base, 1
        while mid in seen:
            n += 1
            mid = f"{base}_{n}"
        seen.add(mid)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        sources.append(MeshSource(id=mid, label=label, path=p))
    return sources


def write_pairs(
    sources: Iterable[MeshSource],
    out: str | Path,
    *,
    n_points: int = DEFAULT_PAIR_POINTS,
    views: Sequence[View] = FEW_SHOT_VIEWS_10,
    up: str = defaults.UP_AXIS,
    image_size: int = defaults.IMAGE_SIZE,
    colour: str = "grey",
    seed: int = 0,
    on_model: Callable[[MeshSource, str | None], None] | None = None,
) -> dict:
    """Render and store every source as a pair under `out`, then write OUT/pairs.json; returns its content.

    A mesh that cannot be read or rendered is skipped with its problem recorded (the rest of the
    batch is kept). Each model's randomness is seeded by (seed, its position), so the result is
    deterministic. `on_model(source, problem_or_None)` is called after each model (progress).
    """
    from clip2point import __version__
    from clip2point.store.checkpoints import write_json

    from .mesh_render import require_open3d

    if n_points < 16:
        raise OptionError(Opt("n_points"), f" must be at least 16, got {n_points}")
    require_open3d()  # before any output: without the mesh extra, say so once
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models, skipped = [], []
    for position, src in enumerate(sources):
        problem = None
        try:
            vertices, faces = src.load()
            points, images = render_pair_views(
                vertices, faces, n_points=n_points, views=views, up=up, image_size=image_size,
                colour=colour, seed=[seed, position],
            )
            write_model(out / src.id, points, images)
            models.append({
                "id": src.id, "label": src.label, "source": str(src.path) if src.path else src.id,
                "views": list(range(len(views))),
            })
        except InputFileError as e:
            problem = e.problem
        except (ValueError, IndexError) as e:  # degenerate meshes: zero area, bad face indices
            problem = f"cannot be rendered ({e})"
        if problem is not None:
            skipped.append({"source": str(src.path) if src.path else src.id, "problem": problem})
        if on_model is not None:
            on_model(src, problem)
    meta = {
        "format": PAIRS_FORMAT,
        "version": PAIRS_VERSION,
        "views": [list(v) for v in views],
        "image_size": image_size,
        "up": up,
        "points": n_points,
        "colour": colour,
        "seed": seed,
        "renderer": "open3d RaycastingScene, orthographic, Phong, white background",
        "c2p_version": __version__,
        "models": models,
        "skipped": skipped,
    }
    write_json(out / PAIRS_FILE, meta)
    return meta


def synth_sources(classes: Sequence[str] | None = None, per_class: int = 4, seed: int = 0) -> list[MeshSource]:
    """Procedural meshes of `clip2point.synth` (z-up), `per_class` per class, labelled by class.

    Each mesh comes from the generator `synth.sample_rng(seed, "train", class, i)`, so the shapes
    are those of `c2p synth --format off` with the same seed.
    """
    from clip2point import synth

    names = synth.check_classes(classes)
    sources = []
    for name in names:
        for i in range(per_class):
            v, f = synth.random_mesh(name, synth.sample_rng(seed, "train", name, i))
            sources.append(MeshSource(id=f"{name}_{i + 1:04d}", label=name, vertices=v, faces=f))
    return sources
