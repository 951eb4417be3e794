"""What ships inside the package beside the code: the small model configs and the trained weights
(package data). Stdlib only, so that listing models needs no torch (clip2point.models.registry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Data folders at the package root (package data): the tiny model configs and the shipped weights.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODEL_CONFIGS_DIR = PACKAGE_DIR / "model_configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"


@dataclass(frozen=True)
class ShippedWeights:
    """Weights that ship inside the package, like an entry of open_clip's pretrained table."""

    file: str  # in WEIGHTS_DIR
    description: str


# (model, tag) -> shipped weights. A model listed here that open_clip has no weights for takes its
# shipped weights when `pretrained` is left at the default (so `--model c2p-demo` alone works).
SHIPPED_WEIGHTS: dict[tuple[str, str], ShippedWeights] = {
    ("c2p-demo", "c2p-demo"): ShippedWeights(
        "c2p-demo.safetensors",
        "a demonstration model trained on depth maps of the 13 `c2p synth` shape classes "
        "(tools/train_demo_model.py, `make demo-model`); not CLIP, useless for real objects",
    ),
}


def shipped_tags(model: str) -> list[str]:
    """The tags of `model`'s weights that ship with the package (open_clip config name)."""
    return [tag for name, tag in SHIPPED_WEIGHTS if name == model]
