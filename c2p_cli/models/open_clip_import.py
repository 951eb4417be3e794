"""Import open_clip without the parts of its import that classify never uses (a cold start of
about 2 s less on a 2-core CPU; README "Cold start").

`import open_clip` costs about 2 s over torch's own import, and nearly all of it is two packages
open_clip needs only for features clip2point does not use:

- torchvision: `open_clip.utils` imports `torchvision.ops.misc` (FrozenBatchNorm2d, for locking a
  tower in training) and `open_clip.transform` imports `torchvision.transforms` (image
  preprocessing). Importing any torchvision submodule first runs `torchvision/__init__.py`, which
  imports `torchvision.models` -> `torchvision.ops.roi_align` -> `torch._dynamo` (1.1 s here).
  Those two modules need nothing from that package init, so `import_open_clip` lets them load
  under bare stand-ins of the `torchvision` and `torchvision.ops` packages (their `__path__`, no
  `__init__` run), then removes the stand-ins and every torchvision module loaded under them from
  `sys.modules`: open_clip keeps its references, and a later `import torchvision` anywhere in the
  process runs the real, complete import from scratch.
- timm (0.6 s, and it imports torchvision in full): `open_clip.timm_model` imports it inside
  `try / except ImportError` and works without it for every non-timm tower. It is withheld during
  the import; `require_timm()` imports it and re-runs `open_clip.timm_model` for models whose
  config names a timm tower.

Nothing changes when open_clip or torchvision is already imported, and any failure of the light
path (a future open_clip or torchvision laid out differently) falls back to the plain import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

# torchvision packages whose __init__ is skipped: the parents of the modules open_clip imports.
_BARE_PACKAGES = ("torchvision", "torchvision.ops")
_WITHHELD = ("timm",)


class _Withhold:
    """A meta-path finder that makes `import timm` fail (ImportError), as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _WITHHELD:
            raise ImportError(f"{name}: withheld while open_clip is imported (clip2point.models.open_clip_import)")
        return None


def _bare_package(name: str, root: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
    module.__package__ = name
    return module


def _forget(prefixes: tuple[str, ...], keep: set[str]) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes and n not in keep]:
        del sys.modules[name]


def _light_import():
    spec = importlib.util.find_spec("torchvision")  # a top-level name: finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision not found")
    root = Path(list(spec.submodule_search_locations)[0])
    before = set(sys.modules)
    finder = _Withhold()
    sys.modules.update({name: _bare_package(name, root) for name in _BARE_PACKAGES})
    sys.meta_path.insert(0, finder)
    try:
        import open_clip
    except BaseException:
        _forget(("open_clip", "torchvision"), before)
        raise
    finally:
        sys.meta_path.remove(finder)
        _forget(("torchvision",), before)
    return open_clip


def import_open_clip():
    """The open_clip module, imported the light way when neither it nor torchvision is loaded yet."""
    if "open_clip" in sys.modules or "torchvision" in sys.modules:
        import open_clip

        return open_clip
    try:
        return _light_import()
    except Exception:  # the light path does not fit this install: the plain import says what is wrong
        import open_clip

        return open_clip


def require_timm(open_clip, model_name: str) -> None:
    """Make timm towers buildable when `model_name`'s config has one (see the module docs)."""
    config = open_clip.get_model_config(model_name) or {}
    if "timm_model_name" not in (config.get("vision_cfg") or {}):
        return
    timm_model = sys.modules.get("open_clip.timm_model")
    if timm_model is not None and getattr(timm_model, "timm", None) is None:
        import timm  # noqa: F401  (a missing timm fails here, with pip's package name)

        importlib.reload(timm_model)
