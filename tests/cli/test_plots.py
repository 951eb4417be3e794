"""Report figures: the eval confusion matrix (title, counts and shares, readable numbers) and the
few-shot training curves (drawn from metrics.jsonl, gaps where a metric is missing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli_helpers import run_c2p


def _luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3] @ np.array([0.299, 0.587, 0.114])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _cells_of(image: np.ndarray, colour) -> list[tuple[slice, slice]]:
    """Bounding boxes of the cells filled with exactly `colour` (cells are separated by grid lines)."""
    mask = (image[..., :3] == np.asarray(colour)).all(-1)
    boxes = [(slice(r0, r1), slice(c0, c1)) for r0, r1 in _runs(mask.any(1)) for c0, c1 in _runs(mask[r0:r1].any(0))]
    return [b for b in boxes if b[0].stop - b[0].start > 10 and b[1].stop - b[1].start > 10]


def _report(confusion, labels, **extra) -> dict:
    c = np.asarray(confusion)
    return {"confusion": c.tolist(), "labels": labels, "top1": float(np.trace(c) / c.sum()), "n": int(c.sum()),
            "mean_class_accuracy": 0.5, "mode": "zero-shot", "dataset": {"kind": "synth", "split": "test"},
            "classifier": {"model": "c2p-demo", "pretrained": "c2p-demo", "views": [[0, 0]] * 6}, **extra}


def test_confusion_has_a_title_area_and_two_panels(tmp_path):
    from PIL import Image

    from clip2point.commands._plots import RIGHT, confusion_png

    k = 13
    path = confusion_png(tmp_path / "c.png", _report(np.eye(k, dtype=int) * 5, [f"class{i}" for i in range(k)]))
    image = np.asarray(Image.open(path).convert("RGB"))
    cells = _cells_of(image, RIGHT)  # every diagonal cell is fully shaded: its count is the largest, its share 100%
    assert len(cells) == 2 * k
    middle = image.shape[1] / 2
    assert sum(box[1].stop < middle for box in cells) == k and sum(box[1].start > middle for box in cells) == k
    # the counts sit beside the shares, on the same rows
    left = sorted(box[0].start for box in cells if box[1].stop < middle)
    right = sorted(box[0].start for box in cells if box[1].start > middle)
    assert left == right
    first_cell = min(left)
    title_rows = image[:40]
    assert (_luminance(title_rows) < 80).sum() > 200  # the title's dark text above the panels
    assert first_cell > 40 + 60  # below the title: panel headings, "predicted" and the column labels
    assert image.shape[0] < first_cell + k * 40 and image.shape[1] < 2 * (k * 40 + 200)  # sized to its content


def test_the_title_says_model_mode_split_and_top1():
    from clip2point.commands._plots import report_title

    head, detail = report_title(_report([[3, 1], [0, 4]], ["a", "b"]))
    assert head.startswith("synth test, zero-shot: top-1 0.875") and "(n=8)" in head
    assert "model c2p-demo" in detail and "6 views" in detail
    adapter = _report([[3, 1], [0, 4]], ["a", "b"], mode="few-shot",
                      classifier={"adapter": "/runs/r16", "which": "best", "model": "ViT-B-32", "weights": "ViT-B-32/openai/sha256:ab"})
    head, detail = report_title(adapter)
    assert "few-shot adapter" in head and "adapter r16 (best epoch)" in detail and "(openai weights)" in detail


def test_numbers_are_light_on_dark_cells_and_dark_on_light_ones():
    from clip2point.commands._plots import RIGHT, WRONG, confusion_image, ink_on, tint

    assert ink_on(RIGHT) == (255, 255, 255) and ink_on((255, 255, 255)) == (0, 0, 0)
    image = np.asarray(confusion_image([[10, 0], [1, 9]], ["a", "b"]).convert("RGB"))
    for fill, want_light in ((RIGHT, True), (tint(WRONG, 0.1), False)):  # "10" on a full diagonal, "1" of 10 off it
        cells = _cells_of(image, fill)
        assert cells, fill
        for rows, cols in cells:
            inside = image[rows, cols]
            text = inside[~(inside == np.asarray(fill)).all(-1)]  # the cell's pixels that are not its fill
            assert len(text) > 10
            lum = _luminance(text)
            assert (lum.max() > 200) if want_light else (lum.min() < 80)
            fill_lum = _luminance(np.asarray(fill, float))
            assert abs(lum.mean() - fill_lum) > 40  # the number stands out of its cell


def test_forty_classes_stay_readable():
    from clip2point.commands._plots import _MatrixGeometry, confusion_image
    from clip2point.models.prompts import MODELNET40

    geo = _MatrixGeometry(MODELNET40, [["100"] * 40])
    assert geo.cell >= 24 and geo.label_w > max(len(n) for n in MODELNET40) * 5  # whole names, a cell per text line
    image = confusion_image(np.eye(40, dtype=int) * 100, list(MODELNET40), title="t")
    assert 1500 < image.size[0] < 3000 and image.size[1] < 1500


def _write_metrics(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")


def test_curves_skip_epochs_without_test_accuracy(tmp_path):
    from PIL import Image

    from clip2point.commands._plots import SERIES, _series, read_metrics, write_curves

    rows = [{"epoch": e, "loss": 2.0 / e, "train_acc": min(1.0, 0.3 * e), "lr": 1e-3, "best": True} for e in range(1, 7)]
    for r in rows[3:]:
        r.update(test_loss=1.5, test_acc=0.8)
    _write_metrics(tmp_path / "metrics.jsonl", rows)
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 7))  # the bad line skipped
    assert [e for e, _ in _series(rows, "test_acc")] == [4, 5, 6]  # a gap, not zeros
    path = write_curves(tmp_path, {"shots": 4, "labels": ["a", "b"], "selection": {"select": "test"}})
    image = np.asarray(Image.open(path).convert("RGB"))
    assert path.name == "curves.png" and image.shape[1] > image.shape[0]
    for colour in (SERIES["train"], SERIES["test"]):
        assert (image == np.asarray(colour)).all(-1).sum() > 50
    assert not (image == np.asarray(SERIES["validation"])).all(-1).any()


def test_curves_without_any_test_accuracy_mark_the_one_measured_after_training(tmp_path):
    from PIL import Image

    from clip2point.commands._plots import SERIES, write_curves

    rows = [{"epoch": e, "loss": 1.0, "train_acc": 0.5, "best": True} for e in range(1, 4)]
    _write_metrics(tmp_path / "metrics.jsonl", rows)
    bare = np.asarray(Image.open(write_curves(tmp_path)).convert("RGB"))
    assert not (bare == np.asarray(SERIES["test"])).all(-1).any()
    summary = {"best_epoch": 3, "test": {"best": {"top1": 0.75}, "last": {"top1": 0.75}}}
    marked = np.asarray(Image.open(write_curves(tmp_path, summary)).convert("RGB"))
    assert (marked == np.asarray(SERIES["test"])).all(-1).sum() > 20
    (tmp_path / "metrics.jsonl").write_text("")
    assert write_curves(tmp_path) is None


@pytest.mark.slow
def test_fewshot_writes_its_training_curves(tmp_path, capsys, monkeypatch):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path / "d", classes=["cube", "torus"], per_class=3, test_per_class=1, fmt="npy", n_points=256, seed=0)
    run = tmp_path / "run"
    r = run_c2p(["fewshot", tmp_path / "d", "--out", run, "--model", "c2p-tiny", "--pretrained", "none", "--shots", "2",
                 "--epochs", "2", "--points", "64", "--no-cache", "--device", "cpu", "-q"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert (run / "curves.png").is_file() and f"training curves: {run / 'curves.png'}" in r.err
