"""The architectures `--model` takes and their weight tags, read without importing torch.

`c2p models` used to import open_clip (and so torch, torchvision and timm: 4 to 8 s) to print names.
open_clip's registry is data: its architectures are the JSON files of `open_clip/model_configs`
(those with `embed_dim`, `vision_cfg` and `text_cfg`, in open_clip's natural order) plus this
package's, and its weight tags are the `_PRETRAINED` table of `open_clip/pretrained.py`. That module
is torch-free but for two optional imports it guards itself (`safetensors.torch`,
`huggingface_hub`); it is loaded here under a private package name with those two withheld, read,
and dropped, so the real open_clip is untouched. Where open_clip is imported already, or its files
are not laid out that way, open_clip itself answers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

from .shipped import MODEL_CONFIGS_DIR, shipped_tags

_PRIVATE = "_clip2point_open_clip_registry"
_WITHHELD = ("safetensors.torch", "huggingface_hub")
_REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def _natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _open_clip_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # top-level: found without being imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _config_names(folder: Path) -> list[str]:
    names = []
    for path in folder.glob("*.json"):
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and all(k in config for k in _REQUIRED_KEYS):
            names.append(path.stem)
    return names


class _Withhold:
    def find_spec(self, name, path=None, target=None):
        if any(name == w or name.startswith(w + ".") for w in _WITHHELD):
            raise ImportError(f"{name}: not needed to read open_clip's weight table")
        return None


def _pretrained_table(folder: Path) -> dict[str, dict]:
    """open_clip's `_PRETRAINED` ({model: {tag: cfg}}), read from its pretrained.py without importing open_clip."""
    package = types.ModuleType(_PRIVATE)
    package.__path__ = [str(folder)]
    finder = _Withhold()
    sys.modules[_PRIVATE] = package
    sys.meta_path.insert(0, finder)
    try:
        return dict(importlib.import_module(f"{_PRIVATE}.pretrained")._PRETRAINED)
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == _PRIVATE or n.startswith(_PRIVATE + ".")]:
            del sys.modules[name]


def _from_files() -> tuple[list[str], dict[str, list[str]]] | None:
    folder = _open_clip_dir()
    if folder is None or "open_clip" in sys.modules or not (folder / "model_configs").is_dir():
        return None
    try:
        table = _pretrained_table(folder)
    except Exception:  # a layout this reader does not know: ask open_clip itself
        return None
    names = sorted(set(_config_names(folder / "model_configs")) | set(_config_names(MODEL_CONFIGS_DIR)), key=_natural_key)
    return names, {name: list(tags) for name, tags in table.items()}


def _from_open_clip() -> tuple[list[str], dict[str, list[str]]]:
    from .encoders import register_model_configs
    from .open_clip_import import import_open_clip

    open_clip = import_open_clip()
    register_model_configs()
    names = open_clip.list_models()
    return names, {name: list(open_clip.list_pretrained_tags_by_model(name)) for name in names}


def list_architectures(contains: str | None = None) -> list[dict]:
    """open_clip's architectures (this package's configs included), offline and without torch: name,
    the weight tags open_clip knows for it and those shipped with the package (`shipped`, also in
    `pretrained`), and whether it is one of the tiny test configs (random weights only)."""
    names, tags = _from_files() or _from_open_clip()
    tiny = {p.stem for p in MODEL_CONFIGS_DIR.glob("*.json")}
    needle = (contains or "").lower()
    rows = []
    for name in names:
        if needle in name.lower():
            shipped = shipped_tags(name)
            rows.append({"name": name, "pretrained": tags.get(name, []) + shipped, "shipped": shipped,
                         "tiny": name in tiny and not shipped})
    return rows
