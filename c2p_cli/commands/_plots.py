"""Report figures drawn with PIL alone (no plotting library): the eval confusion matrix and the
few-shot training curves. Each figure is sized from what it holds (label widths, class count,
epochs), and every number drawn on a coloured cell picks black or white ink against that cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (110, 110, 110)
GRID = (225, 225, 225)
# Ends of the two shade scales: the diagonal (right answers) in blue, the rest (errors) in red.
RIGHT = (8, 48, 107)
WRONG = (153, 0, 13)
# Series colours of the curves (colour-blind safe: blue, orange, green).
SERIES = {"train": (31, 119, 180), "validation": (255, 127, 14), "test": (44, 160, 44)}
AFTER = "test, after training"  # accuracies measured once the training ended: dots, not a line
# Metrics keys of the epoch rows (clip2point.training.fewshot): (loss, accuracy) of each series.
_KEYS = {"train": ("loss", "train_acc"), "validation": ("val_loss", "val_acc"), "test": ("test_loss", "test_acc")}


# -- drawing helpers ----------------------------------------------------------------------------


def font(size: int):
    """PIL's bundled scalable font at `size` px (Pillow >= 10.1 with FreeType), else its bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # older Pillow, or no FreeType: one fixed size
        return ImageFont.load_default()


def text_box(draw, text: str, face) -> tuple[int, int]:
    """Width and height in pixels of `text` drawn with `face`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    return int(math.ceil(right - left)), int(math.ceil(bottom - top))


def ink_on(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on a `fill` background (perceived luminance)."""
    r, g, b = fill
    return BLACK if 0.299 * r + 0.587 * g + 0.114 * b >= 140 else WHITE


def tint(colour: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    """White (t=0) to `colour` (t=1); a square-root scale, so that rare errors still show."""
    t = math.sqrt(min(max(t, 0.0), 1.0))
    return tuple(round(255 - t * (255 - c)) for c in colour)


def _centred(draw, box: tuple[int, int, int, int], text: str, face, fill) -> None:
    x0, y0, x1, y1 = box
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=fill, font=face, anchor="mm")


def _vertical_label(img, xy: tuple[int, int], text: str, face, height: int, fill=BLACK, centre: bool = False) -> None:
    """`text` read bottom to top in a `height`-tall strip at `xy`: starting at its bottom, or centred."""
    from PIL import Image, ImageDraw

    w, h = text_box(ImageDraw.Draw(img), text, face)
    strip = Image.new("RGB", (height, h + 6), WHITE)
    ImageDraw.Draw(strip).text(((height - w) / 2 if centre else 4, 3), text, fill=fill, font=face, anchor="lt")
    img.paste(strip.rotate(90, expand=True), xy)


# -- the confusion matrix -----------------------------------------------------------------------


def report_title(report: dict) -> tuple[str, str]:
    """(headline, detail) of an eval report: data, split and accuracy; then how it was classified."""
    data = report.get("dataset") or {}
    clf = report.get("classifier") or {}
    where = " ".join(str(x) for x in (data.get("kind"), data.get("split")) if x) or "evaluation"
    mode = "few-shot adapter" if clf.get("adapter") else (report.get("mode") or "zero-shot")
    head = f"{where}, {mode}: top-1 {report.get('top1', float('nan')):.3f}"
    if report.get("mean_class_accuracy") is not None:
        head += f", mean class {report['mean_class_accuracy']:.3f}"
    head += f" (n={report.get('n', '?')})"
    parts = []
    if clf.get("adapter"):
        which = f" ({clf['which']} epoch)" if clf.get("which") else ""
        parts.append(f"adapter {Path(clf['adapter']).name}{which}")
    if clf.get("model"):
        weights = clf.get("pretrained") or clf.get("weights")
        tag = str(weights).split("/")[1] if str(weights).count("/") >= 2 else weights  # a weights id: model/tag/hash
        parts.append(f"model {clf['model']}" + (f" ({tag} weights)" if weights else ""))
    if clf.get("depth_encoder"):
        parts.append(f"depth encoder {Path(str(clf['depth_encoder'])).name}")
    views = clf.get("views")
    if views:
        parts.append(f"{views if isinstance(views, int) else len(views)} views")
    return head, ", ".join(parts)


def confusion_png(path: str | Path, report: dict) -> Path:
    """Write an eval report's confusion matrix (counts and row-normalised, titled) as a PNG."""
    head, detail = report_title(report)
    image = confusion_image(report["confusion"], report["labels"], title=head, subtitle=detail)
    image.save(path, optimize=True)
    return Path(path)


def confusion_image(confusion: Sequence[Sequence[int]], labels: Sequence[str], *, title: str = "", subtitle: str = ""):
    """Two panels side by side, rows true class and columns predicted: the counts (shaded by count)
    and each row's shares in percent (shaded by share); a title area above. Returns a PIL image."""
    import numpy as np
    from PIL import Image, ImageDraw

    counts = np.asarray(confusion, dtype=np.int64).reshape(len(labels), len(labels))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    peak = max(int(counts.max(initial=0)), 1)
    count_text = [[str(v) if v else "" for v in row] for row in counts.tolist()]
    share_text = [[_percent(s) if c else "" for s, c in zip(sr, cr, strict=True)] for sr, cr in zip(shares.tolist(), counts.tolist(), strict=True)]
    panels = [
        ("counts", count_text, counts / peak),
        ("share of the true class (%)", share_text, shares),
    ]
    geo = _MatrixGeometry(labels, count_text + share_text)
    title_face, sub_face = font(18), font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = 12 + text_box(probe, "Ag", title_face)[1] + (8 + text_box(probe, "Ag", sub_face)[1] if subtitle else 0) + 14
    width = max(2 * geo.width + 30, text_box(probe, title, title_face)[0] + 24, text_box(probe, subtitle, sub_face)[0] + 24)
    img = Image.new("RGB", (width, title_h + geo.height), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((12, 12), title, fill=BLACK, font=title_face)
    if subtitle:
        draw.text((12, 12 + text_box(probe, "Ag", title_face)[1] + 8), subtitle, fill=GREY, font=sub_face)
    for p, (heading, texts, weights) in enumerate(panels):
        _draw_matrix(img, (p * (geo.width + 20), title_h), geo, heading, texts, weights)
    return img


def _percent(share: float) -> str:
    value = round(100 * share)
    return "<1" if value == 0 and share > 0 else str(value)


class _MatrixGeometry:
    """Cell, label and heading sizes of one panel, measured from the texts it will hold."""

    def __init__(self, labels: Sequence[str], texts: list[list[str]]):
        from PIL import Image, ImageDraw

        self.labels = list(labels)
        self.label_face, self.number_face, self.heading_face = font(13), font(12), font(14)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        widest = max((text_box(probe, t, self.number_face)[0] for row in texts for t in row), default=0)
        self.cell = max(26, widest + 8)
        self.label_w = max((text_box(probe, s, self.label_face)[0] for s in self.labels), default=0) + 10
        self.heading_h = text_box(probe, "Ag", self.heading_face)[1] + 10
        self.axis_h = text_box(probe, "Ag", self.label_face)[1] + 8
        k = len(self.labels)
        self.left = 10 + self.axis_h + self.label_w  # "true class" strip, then the row labels
        self.top = self.heading_h + self.axis_h + self.label_w  # heading, "predicted", column labels
        self.width = self.left + k * self.cell + 10
        self.height = self.top + k * self.cell + 12


def _draw_matrix(img, origin: tuple[int, int], geo: _MatrixGeometry, heading: str, texts, weights) -> None:
    """One panel at `origin`: heading, axis captions, labels and the shaded, numbered cells."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    ox, oy = origin
    k, cell = len(geo.labels), geo.cell
    gx, gy = ox + geo.left, oy + geo.top  # the grid's top-left corner
    draw.text((gx, oy), heading, fill=BLACK, font=geo.heading_face)
    _centred(draw, (gx, oy + geo.heading_h, gx + k * cell, oy + geo.heading_h + geo.axis_h), "predicted", geo.label_face, GREY)
    _vertical_label(img, (ox + 10, gy), "true class", geo.label_face, k * cell, GREY, centre=True)
    for j, name in enumerate(geo.labels):
        _vertical_label(img, (gx + j * cell + (cell - geo.axis_h) // 2, gy - geo.label_w), name, geo.label_face, geo.label_w)
    for i, name in enumerate(geo.labels):
        y0 = gy + i * cell
        draw.text((gx - 6, y0 + cell / 2), name, fill=BLACK, font=geo.label_face, anchor="rm")
        for j in range(k):
            x0 = gx + j * cell
            fill = tint(RIGHT if i == j else WRONG, float(weights[i][j]))
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=fill, outline=GRID)
            if texts[i][j]:
                _centred(draw, (x0, y0, x0 + cell, y0 + cell), texts[i][j], geo.number_face, ink_on(fill))


# -- few-shot training curves -------------------------------------------------------------------


def read_metrics(path: str | Path) -> list[dict]:
    """The epoch rows of a run's metrics.jsonl, in epoch order; lines that are not rows are skipped."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return sorted(rows, key=lambda r: r["epoch"])


def _series(rows: Sequence[dict], key: str) -> list[tuple[float, float]]:
    """(epoch, value) of the rows that hold a finite `key`: a missing value leaves a gap, not a zero."""
    out = []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append((float(r["epoch"]), float(v)))
    return out


def curves_image(rows: Sequence[dict], *, title: str = "", test_after: dict[int, float] | None = None):
    """Loss and accuracy per epoch, side by side: training, and the validation or test split when
    the rows hold it (`val_*` / `test_*`). `test_after` ({epoch: accuracy}) marks test accuracies
    measured after training (of the kept and the last epoch). A dashed line marks the kept epoch
    when it is not the last one. Returns a PIL image."""
    from PIL import Image, ImageDraw

    epochs = [r["epoch"] for r in rows] or [1]
    x_range = (min(epochs + [1]), max(epochs + [1]))
    loss = {name: _series(rows, keys[0]) for name, keys in _KEYS.items()}
    acc = {name: _series(rows, keys[1]) for name, keys in _KEYS.items()}
    after = sorted((float(e), float(a)) for e, a in (test_after or {}).items() if a is not None and math.isfinite(a))
    if after:
        acc[AFTER] = after
    peak = max((v for pts in loss.values() for _, v in pts), default=1.0)
    kept = [r["epoch"] for r in rows if r.get("best")]
    marker = kept[-1] if kept and len(kept) < len(rows) else None
    title_face = font(16)
    title_h = text_box(ImageDraw.Draw(Image.new("RGB", (1, 1))), title or "Ag", title_face)[1] + 24
    panel_w, panel_h = 460, 310
    img = Image.new("RGB", (2 * panel_w + 30, title_h + panel_h), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((14, 12), title, fill=BLACK, font=title_face)
    charts = [("loss", loss, (0.0, _nice_top(peak))), ("accuracy", acc, (0.0, 1.0))]
    for p, (heading, series, y_range) in enumerate(charts):
        box = (10 + p * (panel_w + 10), title_h, 10 + p * (panel_w + 10) + panel_w, title_h + panel_h)
        _draw_chart(draw, box, heading, {k: v for k, v in series.items() if v}, x_range, y_range, marker)
    return img


def _nice_top(peak: float, steps: Sequence[float] = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)) -> float:
    """The smallest of `steps` x 10^k at or above `peak` (an axis end, or a tick step, that reads well)."""
    if not math.isfinite(peak) or peak <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(peak))
    return next(m * scale for m in steps if m * scale >= peak * (1 - 1e-9))


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values between `low` and `high` inclusive."""
    span = high - low
    if span <= 0:
        return [low]
    step = _nice_top(span / count, (1, 2, 2.5, 5, 10))
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _draw_chart(draw, box, heading: str, series: dict, x_range, y_range, marker: int | None) -> None:
    """A line chart in `box`: axes with ticks, one line per series (dots when epochs are few), legend."""
    x0, y0, x1, y1 = box
    face, small = font(14), font(12)
    left, right, top, bottom = x0 + 52, x1 - 12, y0 + 28, y1 - 60  # room for ticks, axis name and legend
    (xa, xb), (ya, yb) = x_range, y_range
    sx = (lambda x: left + (right - left) * (x - xa) / (xb - xa)) if xb > xa else (lambda x: (left + right) / 2)
    sy = lambda y: bottom - (bottom - top) * (y - ya) / (yb - ya)  # noqa: E731
    draw.text((left, y0 + 4), heading, fill=BLACK, font=face)
    for t in _ticks(ya, yb):
        draw.line([(left, sy(t)), (right, sy(t))], fill=GRID)
        draw.text((left - 6, sy(t)), f"{t:g}", fill=GREY, font=small, anchor="rm")
    for t in _ticks(xa, xb, 6) if xb > xa else [xa]:
        if t == int(t):
            draw.line([(sx(t), bottom), (sx(t), bottom + 4)], fill=GREY)
            draw.text((sx(t), bottom + 6), f"{int(t)}", fill=GREY, font=small, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=GREY)
    draw.text(((left + right) / 2, bottom + 22), "epoch", fill=GREY, font=small, anchor="ma")
    if marker is not None:
        for y in range(int(top), int(bottom), 8):
            draw.line([(sx(marker), y), (sx(marker), min(y + 4, bottom))], fill=GREY)
        label = f"kept: epoch {marker}"
        lx = min(sx(marker) + 4, right - draw.textlength(label, font=small) - 4)
        draw.rectangle(draw.textbbox((lx, bottom - 6), label, font=small, anchor="lb"), fill=WHITE)
        draw.text((lx, bottom - 6), label, fill=GREY, font=small, anchor="lb")
    few = (xb - xa) <= 30
    legend_x = left
    for name, points in series.items():
        colour = SERIES[name.split(",")[0]]
        xy = [(sx(x), sy(min(max(y, ya), yb))) for x, y in points]
        if len(xy) > 1 and name != AFTER:
            draw.line(xy, fill=colour, width=2, joint="curve")
        if name == AFTER:  # a few measurements: big dots with their values
            for (x, y), (_, value) in zip(xy, points, strict=True):
                draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline=WHITE)
                right_half = x > (left + right) / 2  # the value inside the chart, beside its dot
                draw.text((x - 8 if right_half else x + 8, y + 8), f"{value:.3f}", fill=colour, font=small,
                          anchor="ra" if right_half else "la")
        elif few or len(xy) == 1:
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.line([(legend_x, y1 - 14), (legend_x + 18, y1 - 14)], fill=colour, width=3)
        draw.text((legend_x + 22, y1 - 14), name, fill=BLACK, font=small, anchor="lm")
        legend_x += 22 + int(draw.textlength(name, font=small)) + 16


def curves_title(summary: dict | None, run_dir: Path) -> str:
    """"few-shot run NAME: 16 shots x 13 classes, last epoch kept" from a run's summary."""
    s = summary or {}
    text = f"few-shot run {run_dir.name}"
    if s.get("shots") and s.get("labels"):
        text += f": {s['shots']} shots x {len(s['labels'])} classes"
    select = (s.get("selection") or {}).get("select")
    if select:
        text += {"last": ", last epoch kept", "val": ", epoch kept on validation accuracy",
                 "test": ", epoch kept on TEST accuracy (optimistic)"}.get(select, "")
    return text


def write_curves(run_dir: str | Path, summary: dict | None = None) -> Path | None:
    """Draw RUN/curves.png from RUN/metrics.jsonl (and the test accuracy of `summary`, a
    `run_fewshot` summary, when it has one); returns its path, or None when no epoch was logged."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics) if metrics.is_file() else []
    if not rows:
        return None
    s = summary or {}
    test = s.get("test") or {}
    after = {}
    if not any("test_acc" in r for r in rows):  # per-epoch test accuracy already drawn otherwise
        for which, epoch in (("last", rows[-1]["epoch"]), ("best", s.get("best_epoch"))):
            if isinstance(epoch, int) and isinstance(test.get(which), dict):
                after[epoch] = test[which].get("top1")
    out = run_dir / "curves.png"
    curves_image(rows, title=curves_title(summary, run_dir), test_after=after).save(out, optimize=True)
    return out
