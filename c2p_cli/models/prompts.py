"""Class labels, prompt templates and CLIP text features (prompt-ensembled, cached on disk).

The built-in label sets are the official CLIP2Point class strings (zeroshot.py, fewshot.py,
pretraining.py): the prompt is `image of a <name>` with no period, and ModelNet40 says
"night stand" and "flower pot" while ModelNet10 keeps "night_stand". A dataset's own class names
(its folders, or shape_names.txt: "night_stand", "flower_pot") are mapped to the same strings
when the dataset's classes are one of these sets (`prompt_names`), so `c2p eval`, few-shot runs
and the official DPA checkpoint see exactly the official text features. Other labels go into the
prompt with underscores read as spaces.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults
from ..errors import Opt, OptionError, UsageError

if TYPE_CHECKING:  # torch is imported where features are computed, so label sets stay cheap to import
    import torch

# ModelNet40, the official prompt strings in the official label order (label id = index; the
# order of shape_names.txt of modelnet40_ply_hdf5_2048 and of ModelNet40_Ply's file prefixes).
MODELNET40 = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower pot", "glass box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night stand", "person", "piano", "plant", "radio", "range hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv stand", "vase", "wardrobe", "xbox",
)
# The same classes as the datasets name them (folders of the .off release, shape_names.txt).
MODELNET40_FOLDERS = tuple(name.replace(" ", "_") for name in MODELNET40)
# ModelNet10: the official list keeps the underscore of "night_stand" (alphabetical, as its folders).
MODELNET10 = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
# ScanObjectNN: the order of the label ids stored in its h5 files (object id 0..14).
SCANOBJECTNN = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)
# ShapeNetCore v2's 55 categories, in ascending synset-id order (label id = index). Point-BERT's
# ShapeNet-55 files are named "<synset>-<model id>.npy", so the synset is the key to this table.
SHAPENET55_SYNSETS = {
    "02691156": "airplane", "02747177": "trash_bin", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "can", "02954340": "cap",
    "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "display", "03261776": "earphone",
    "03325088": "faucet", "03337140": "file_cabinet", "03467517": "guitar", "03513137": "helmet",
    "03593526": "jar", "03624134": "knife", "03636649": "lamp", "03642806": "laptop",
    "03691459": "loudspeaker", "03710193": "mailbox", "03759954": "microphone", "03761084": "microwave",
    "03790512": "motorbike", "03797390": "mug", "03928116": "piano", "03938244": "pillow",
    "03948459": "pistol", "03991062": "flowerpot", "04004475": "printer", "04074963": "remote",
    "04090263": "rifle", "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa",
    "04330267": "stove", "04379243": "table", "04401088": "telephone", "04460130": "tower",
    "04468005": "train", "04530566": "watercraft", "04554684": "washer",
}
# The names the datasets use (Point-BERT's ShapeNet-55 class names), synset order.
SHAPENET55_FOLDERS = tuple(SHAPENET55_SYNSETS[s] for s in sorted(SHAPENET55_SYNSETS))
# The official strings of the pre-training's ShapeNet validation (pretraining.py), same order.
SHAPENET55 = (
    "airplane", "ashcan", "bag", "basket", "bathtub", "bed", "bench", "birdhouse", "bookshelf", "bottle",
    "bowl", "bus", "cabinet", "camera", "can", "cap", "car", "cellular telephone", "chair", "clock",
    "computer keyboard", "dishwasher", "display", "earphone", "faucet", "file", "guitar", "helmet", "jar", "knife",
    "lamp", "laptop", "loudspeaker", "mailbox", "microphone", "microwave", "motorcycle", "mug", "piano", "pillow",
    "pistol", "pot", "printer", "remote control", "rifle", "rocket", "skateboard", "sofa", "stove", "table",
    "telephone", "tower", "train", "vessel", "washer",
)

# name -> the official strings; `LABEL_FOLDERS[name]` are the same classes as datasets name them.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "modelnet40": MODELNET40,
    "modelnet10": MODELNET10,
    "scanobjectnn": SCANOBJECTNN,
    "shapenet55": SHAPENET55,
}
LABEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "modelnet40": MODELNET40_FOLDERS,
    "modelnet10": MODELNET10,
    "scanobjectnn": SCANOBJECTNN,
    "shapenet55": SHAPENET55_FOLDERS,
}

DEFAULT_TEMPLATES = (defaults.PROMPT_TEMPLATE,)


def canonical_label(label: str) -> str:
    """A label compared across spellings: lower case, underscores and runs of spaces as one space."""
    return " ".join(label.replace("_", " ").lower().split())


def readable_name(label: str) -> str:
    """A label outside the built-in sets as it goes into a prompt: "flower_pot" -> "flower pot"."""
    return " ".join(label.replace("_", " ").split())


def official_label_set(labels: Sequence[str]) -> str | None:
    """The built-in set whose classes `labels` are (in any order and either spelling), or None."""
    wanted = sorted(canonical_label(x) for x in labels)
    for name in LABEL_SETS:
        for names in (LABEL_SETS[name], LABEL_FOLDERS[name]):
            if sorted(canonical_label(x) for x in names) == wanted:
                return name
    return None


def prompt_names(labels: Sequence[str]) -> list[str]:
    """What goes into the prompt for each label: the official string when the labels are the classes
    of a built-in set ("night_stand" -> "night stand" among ModelNet40's, "night_stand" among
    ModelNet10's), else the label with underscores read as spaces."""
    labels = list(labels)
    found = official_label_set(labels)
    if found is None:
        return [readable_name(x) for x in labels]
    official = {}
    for folder, name in zip(LABEL_FOLDERS[found], LABEL_SETS[found], strict=True):
        official[canonical_label(folder)] = name
        official[canonical_label(name)] = name
    return [official[canonical_label(x)] for x in labels]


def prompt_texts(labels: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Per label, its prompts: each template filled with `prompt_names(labels)`."""
    return [[template.format(name) for template in templates] for name in prompt_names(labels)]


def resolve_labels(labels: str | Sequence[str] | None, label_set: str | None) -> list[str]:
    """Class labels from a comma-separated string / list, or a named set; exactly one of the two.

    UsageError for both or neither, an empty or duplicated label, or an unknown set.
    """
    if (labels is None) == (label_set is None):
        raise OptionError(
            "give exactly one of ", Opt("labels"), " (comma-separated class names) and ", Opt("label_set"),
            f" ({', '.join(LABEL_SETS)})"
        )
    if label_set is not None:
        key = label_set.strip().lower().replace("-", "")
        if key not in LABEL_SETS:
            raise OptionError("unknown ", Opt("label_set"), f" {label_set!r}; choose one of {', '.join(LABEL_SETS)}")
        return list(LABEL_SETS[key])
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise UsageError(f"label {i + 1} is not text: {item!r}")
        name = item.strip()
        if not name:
            raise OptionError(Opt("labels"), f": label {i + 1} is empty (check for a stray comma)")
        twin = next((seen for seen in out if canonical_label(seen) == canonical_label(name)), None)
        if twin is not None:
            # CLIP's tokenizer lower-cases and collapses spaces: both would get the same prompt
            same = "given twice" if twin == name else f"the same label as {twin!r} for CLIP"
            raise OptionError(Opt("labels"), f": {name!r} is {same}")
        out.append(name)
    if not out:
        raise OptionError(Opt("labels"), ": no labels given")
    return out


MAX_LABELS_FILE_BYTES = 16 * 1024 * 1024


def read_labels_file(path: str | Path) -> list[str]:
    """One label a line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LABELS_FILE_BYTES:
            raise OptionError(Opt("labels_file"), f" {path}: {size} bytes is too large for a list of labels")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise OptionError(Opt("labels_file"), f" {path}: cannot read it ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise OptionError(Opt("labels_file"), f" {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    labels = [line.strip() for line in text.splitlines()]
    labels = [lab for lab in labels if lab and not lab.startswith("#")]
    if not labels:
        raise OptionError(Opt("labels_file"), f" {path}: holds no labels")
    return labels


def resolve_label_options(
    labels: str | Sequence[str] | None = None, labels_file: str | Path | None = None, label_set: str | None = None
) -> list[str] | None:
    """The labels a run was given: a comma-separated value or a list (`labels`), a file with one label a
    line (`labels_file`) or a built-in set (`label_set`); None when none was given (an adapter or an
    export brings its own). Guards against the classic slip of `labels="classes.txt"`: a one-class
    classifier that reports probability 1.0 for every file. Refuses a labels value that is a file
    path, two sources at once, duplicates, and fewer than two labels."""
    if labels_file is not None:
        if labels is not None:
            raise OptionError("give ", Opt("labels"), " or ", Opt("labels_file"), ", not both")
        labels = read_labels_file(labels_file)
    elif isinstance(labels, str) and "," not in labels and labels.strip() and Path(labels.strip()).is_file():
        raise OptionError(
            Opt("labels"), f" {labels!r} is a file, not a list of labels; to read one label a line from it, use ",
            Opt("labels_file"),
        )
    if labels is None and label_set is None:
        return None
    names = resolve_labels(labels, label_set)
    if len(names) < 2:
        raise OptionError(
            Opt("labels" if labels_file is None else "labels_file"),
            f" gives one label ({names[0]!r}); a classifier needs at least two (with one, every file gets probability 1.0)",
        )
    return names


def resolve_templates(prompts: Sequence[str] | None) -> list[str]:
    """Prompt templates; default ["image of a {}"] (the official one, no period). Each must contain "{}" exactly once."""
    if not prompts:
        return list(DEFAULT_TEMPLATES)
    out: list[str] = []
    for template in prompts:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise OptionError(Opt("templates"), f" {template!r} must contain '{{}}' exactly once (where the label goes)")
        try:
            template.format("x")
        except (IndexError, KeyError, ValueError) as e:
            raise OptionError(Opt("templates"), f" {template!r}: braces other than '{{}}' must be doubled ({e})") from e
        if template not in out:
            out.append(template)
    return out


def _cache_key(bundle, texts: Sequence[Sequence[str]]) -> str:
    import open_clip
    import torch

    from .. import __version__

    payload = json.dumps(
        {
            "model": bundle.model_name,
            "weights": bundle.weights_id,
            "texts": [list(t) for t in texts],
            "version": __version__,
            # random ("none") weights are only reproducible within one torch / open_clip version
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _encode_texts(bundle, per_label: Sequence[Sequence[str]], batch_size: int = 256) -> torch.Tensor:
    """[K, D] L2-normalised class embeddings: per label, the mean of its normalised template
    embeddings, re-normalised."""
    import torch

    model = bundle.model
    device = bundle.device
    texts = [text for group in per_label for text in group]
    n_templates = len(per_label[0])
    chunks = []
    # no_grad, not inference_mode: adapters train against these features, and inference tensors
    # cannot be saved for backward.
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = bundle.tokenizer(texts[start:start + batch_size]).to(device)
            chunks.append(model.encode_text(tokens).float())
    features = torch.cat(chunks).view(len(per_label), n_templates, -1)
    features = torch.nn.functional.normalize(features, dim=-1).mean(dim=1)
    return torch.nn.functional.normalize(features, dim=-1)


def text_features(
    bundle,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """[K, D] L2-normalised text features of `labels` (CLIP prompt ensembling over `templates`).

    The prompts are `prompt_texts(labels, templates)` (official strings for the built-in sets).
    Cached as safetensors under `cache_dir` (default: paths.cache_dir("text_features")), keyed by
    model, weights id, the prompt texts and project version. A corrupt cache entry is recomputed.
    Returned as float32 on the model's device.
    """
    from clip2point.store.checkpoints import load_tensors, save_tensors

    from ..errors import CheckpointError
    from ..store.paths import cache_dir as default_cache_dir

    labels, templates = list(labels), list(templates)
    if not labels:
        raise UsageError("no labels to encode")
    if not templates:
        raise UsageError("no prompt templates")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("text_features")
    texts = prompt_texts(labels, templates)
    path = folder / f"{_cache_key(bundle, texts)}.safetensors"
    if path.is_file():
        try:
            cached = load_tensors(path).get("text_features")
        except CheckpointError:
            cached = None  # corrupt or truncated: recompute and overwrite below
        if cached is not None and cached.ndim == 2 and cached.shape[0] == len(labels):
            return cached.float().to(bundle.device)
    features = _encode_texts(bundle, texts)
    try:
        save_tensors(
            path,
            {"text_features": features},
            metadata={"model": bundle.model_name, "weights_id": bundle.weights_id, "labels": json.dumps(labels)},
        )
    except OSError:
        pass  # a read-only or full cache directory only costs the next run the recomputation
    return features
