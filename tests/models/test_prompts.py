"""Label parsing, label sets, templates, and the on-disk text-feature cache."""

from __future__ import annotations

import pytest
import torch

from clip2point.errors import UsageError
from clip2point.models.encoders import load_clip
from clip2point.models.prompts import (
    LABEL_FOLDERS,
    LABEL_SETS,
    SHAPENET55_SYNSETS,
    official_label_set,
    prompt_names,
    prompt_texts,
    readable_name,
    resolve_labels,
    resolve_templates,
    text_features,
)


@pytest.fixture(scope="module")
def bundle():
    return load_clip("c2p-tiny", "none")


class _CountingModel:
    """Wraps the CLIP model to count text-encoder calls."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def encode_text(self, tokens):
        self.calls += 1
        return self.model.encode_text(tokens)

    def parameters(self):
        return self.model.parameters()


def _counting(bundle):
    from dataclasses import replace

    return replace(bundle, model=_CountingModel(bundle.model))


def test_label_sets():
    assert {k: len(v) for k, v in LABEL_SETS.items()} == {
        "modelnet40": 40, "modelnet10": 10, "scanobjectnn": 15, "shapenet55": 55,
    }
    assert all(len(set(v)) == len(v) for v in LABEL_SETS.values())
    assert {k: len(v) for k, v in LABEL_FOLDERS.items()} == {k: len(v) for k, v in LABEL_SETS.items()}
    mn40 = LABEL_SETS["modelnet40"]
    assert mn40[0] == "airplane" and mn40[15] == "flower pot" and mn40[23] == "night stand" and mn40[-1] == "xbox"
    assert LABEL_FOLDERS["modelnet40"][23] == "night_stand"
    assert LABEL_SETS["scanobjectnn"][:3] == ("bag", "bin", "box") and LABEL_SETS["scanobjectnn"][-1] == "toilet"
    assert list(SHAPENET55_SYNSETS) == sorted(SHAPENET55_SYNSETS)
    assert LABEL_SETS["shapenet55"][0] == "airplane" and SHAPENET55_SYNSETS["03001627"] == "chair"
    assert LABEL_SETS["shapenet55"][LABEL_FOLDERS["shapenet55"].index("trash_bin")] == "ashcan"


def test_label_sets_are_the_official_strings():
    """The class lists of the official zeroshot.py (ModelNet40, ModelNet10, ScanObjectNN)."""
    assert LABEL_SETS["modelnet40"] == (
        "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
        "curtain", "desk", "door", "dresser", "flower pot", "glass box", "guitar", "keyboard", "lamp", "laptop",
        "mantel", "monitor", "night stand", "person", "piano", "plant", "radio", "range hood", "sink", "sofa",
        "stairs", "stool", "table", "tent", "toilet", "tv stand", "vase", "wardrobe", "xbox")
    assert LABEL_SETS["modelnet10"] == ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand",
                                        "sofa", "table", "toilet")
    assert LABEL_SETS["scanobjectnn"] == ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
                                          "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet")


def test_dataset_folder_names_map_to_the_official_strings():
    mn40_folders = list(LABEL_FOLDERS["modelnet40"])
    assert official_label_set(mn40_folders) == "modelnet40"
    names = prompt_names(mn40_folders)
    assert names == list(LABEL_SETS["modelnet40"])
    assert names[mn40_folders.index("night_stand")] == "night stand"
    assert names[mn40_folders.index("flower_pot")] == "flower pot"
    # ModelNet10's official list keeps the underscore; any order of its folders is recognised.
    mn10 = sorted(LABEL_SETS["modelnet10"], reverse=True)
    assert official_label_set(mn10) == "modelnet10"
    assert prompt_names(mn10)[mn10.index("night_stand")] == "night_stand"
    # Not a built-in set: underscores are read as spaces.
    assert prompt_names(["night_stand", "chair"]) == ["night stand", "chair"]
    assert prompt_texts(["flower_pot", "cup"], ["image of a {}"]) == [["image of a flower pot"], ["image of a cup"]]


def test_resolve_labels():
    assert resolve_labels(" chair, table ,lamp", None) == ["chair", "table", "lamp"]
    assert resolve_labels(["a b", "c"], None) == ["a b", "c"]
    assert resolve_labels(None, "ModelNet-10") == list(LABEL_SETS["modelnet10"])
    with pytest.raises(UsageError, match="exactly one"):
        resolve_labels("a,b", "modelnet40")
    with pytest.raises(UsageError, match="exactly one"):
        resolve_labels(None, None)
    with pytest.raises(UsageError, match="label 2 is empty"):
        resolve_labels("chair,,table", None)
    with pytest.raises(UsageError, match="'chair' is given twice"):
        resolve_labels("chair, table, chair", None)
    with pytest.raises(UsageError, match="modelnet40.*scanobjectnn"):
        resolve_labels(None, "imagenet")


def test_readable_names():
    assert readable_name("flower_pot") == "flower pot"
    assert readable_name("night_stand") == "night stand"
    assert readable_name("airplane") == "airplane"


def test_resolve_templates():
    assert resolve_templates(None) == ["image of a {}"]  # the official prompt: no period
    assert resolve_templates(["a photo of a {}.", "a {} depth map", "a photo of a {}."]) == [
        "a photo of a {}.", "a {} depth map",
    ]
    with pytest.raises(UsageError, match="must contain"):
        resolve_templates(["a photo"])
    with pytest.raises(UsageError, match="must contain"):
        resolve_templates(["{} and {}"])
    with pytest.raises(UsageError, match="braces"):
        resolve_templates(["a {} with {name}"])


def test_text_features_are_prompt_ensembles(bundle, tmp_path):
    labels = ["chair", "night_stand"]
    templates = ["image of a {}.", "a depth map of a {}."]
    got = text_features(bundle, labels, templates, cache_dir=tmp_path)
    assert got.shape == (2, bundle.model.text_projection.shape[1])
    assert torch.allclose(got.norm(dim=-1), torch.ones(2), atol=1e-5)

    with torch.no_grad():
        texts = [t.format(name) for name in ("chair", "night stand") for t in templates]
        raw = torch.nn.functional.normalize(bundle.model.encode_text(bundle.tokenizer(texts)), dim=-1)
    expected = torch.nn.functional.normalize(raw.view(2, 2, -1).mean(1), dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_cache_hit_and_keying(bundle, tmp_path):
    counted = _counting(bundle)
    first = text_features(counted, ["chair", "table"], ["image of a {}."], cache_dir=tmp_path)
    assert counted.model.calls == 1
    second = text_features(counted, ["chair", "table"], ["image of a {}."], cache_dir=tmp_path)
    assert counted.model.calls == 1 and torch.equal(first, second)

    other = text_features(counted, ["chair", "table"], ["a photo of a {}."], cache_dir=tmp_path)
    assert counted.model.calls == 2 and not torch.allclose(first, other)
    reordered = text_features(counted, ["table", "chair"], ["image of a {}."], cache_dir=tmp_path)
    assert counted.model.calls == 3 and torch.allclose(reordered, first.flip(0), atol=1e-6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_corrupt_cache_is_recomputed(bundle, tmp_path):
    counted = _counting(bundle)
    first = text_features(counted, ["cup", "bowl"], cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"\x00garbage")
    again = text_features(counted, ["cup", "bowl"], cache_dir=tmp_path)
    assert counted.model.calls == 2 and torch.allclose(first, again)
    third = text_features(counted, ["cup", "bowl"], cache_dir=tmp_path)  # rewritten and readable again
    assert counted.model.calls == 2 and torch.equal(third, again)


def test_text_features_can_be_trained_against(bundle, tmp_path):
    """Adapters train logits = f(x) @ text.T; the features must not be inference-mode tensors."""
    for _ in range(2):  # computed, then read back from the cache
        text = text_features(bundle, ["cup", "bowl"], cache_dir=tmp_path)
        weight = torch.nn.Parameter(torch.ones(1, text.shape[1]))
        (weight @ text.t()).sum().backward()
        assert weight.grad is not None


def test_dataset_classes_get_the_official_text_features(bundle, tmp_path):
    """zeroshot.py: tokenize('image of a ' + name) over its list, encode_text, L2-normalise."""
    official = ["image of a " + name for name in LABEL_SETS["modelnet40"]]
    with torch.no_grad():
        raw = bundle.model.encode_text(bundle.tokenizer(official)).float()
    expected = raw / raw.norm(dim=-1, keepdim=True)
    from_folders = text_features(bundle, LABEL_FOLDERS["modelnet40"], cache_dir=tmp_path)
    from_set = text_features(bundle, resolve_labels(None, "modelnet40"), cache_dir=tmp_path)
    torch.testing.assert_close(from_folders, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_set, expected, atol=1e-5, rtol=0)
