"""One description of a run: what classifies, how files are read, how the run goes.

A `RunSpec` is built once, from the CLI's options, `C2P_*` variables or the Python API's keyword
arguments, by `describe_run`, which checks every value against `clip2point.option_table` and the
options against each other (`CLASHES`), once, before anything heavy is imported or loaded. Every
entry point then passes the same object down: `c2p classify`, `c2p eval`, `c2p export`, the
Python API, each torchrun rank. `clip2point.models.resolve.load_run_classifier(spec)` turns it
into a classifier (whatever the backend); `complete(spec, classifier)` fills in what the
classifier brought (an adapter's labels and read settings, an export's views); `record(spec,
classifier)` is what outputs store, and `differences(old, new)` is what `--resume` refuses.

Options left unset are None here: they take the table's default, or what an adapter run or an
export brings. `given` names the options that were set on purpose (typed on the command line,
or passed to the API): an adapter or an export refuses those it would override (`CLASHES`), but
not a machine-wide default from a `C2P_*` variable.

Standard library only (labels files are read with the standard library too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from . import option_table
from .errors import Opt, OptionError, OptionText


@dataclass(frozen=True)
class RunSpec:
    """What a run classifies with and how (see the module docstring). Build it with `describe_run`."""

    labels: tuple[str, ...] | None = None
    label_set: str | None = None  # the built-in set the labels came from
    templates: tuple[str, ...] | None = None
    model: str = option_table.default("model")
    pretrained: str = option_table.default("pretrained")
    depth_encoder: str | None = None
    adapter: str | None = None
    which: str = option_table.default("which")
    backend: str = option_table.default("backend")
    engine: str | None = None
    graph_precision: str | None = None
    views: int | None = None
    n_points: int | None = None
    sampling: str | None = None
    up: str | None = None
    seed: int = option_table.default("seed")
    max_points: int = option_table.default("max_points")
    bin_columns: int = option_table.default("bin_columns")
    precision: str = option_table.default("precision")
    batch_size: int = option_table.default("batch_size")
    top_k: int = option_table.default("top_k")
    workers: int | None = None
    device: str = option_table.default("device")
    given: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def source(self) -> str:
        """What brings the classifier: "export", "adapter run", "adapter checkpoint" or "zero-shot"."""
        if self.engine is not None:
            return "export"
        if self.adapter is not None:
            return "adapter checkpoint" if Path(self.adapter).is_file() else "adapter run"
        return "zero-shot"

    @property
    def labels_by_position(self) -> bool:
        """True when the labels were given as names for a dataset's classes in order (not a built-in set)."""
        return self.labels is not None and self.label_set is None

    def read_options(self):
        """How files are read (clip2point.engine.batching.ReadOptions); unset values take the defaults."""
        from .engine.batching import ReadOptions

        return ReadOptions(
            n_points=_or_default(self.n_points, "n_points"), sampling=_or_default(self.sampling, "sampling"),
            seed=self.seed, up=_or_default(self.up, "up"), max_points=self.max_points, bin_columns=self.bin_columns,
        )


def _or_default(value, name: str):
    return option_table.default(name) if value is None else value


# ---------------------------------------------------------------------------------------------
# What an adapter or an export brings with it, and so refuses to be told
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clash:
    source: str  # RunSpec.source
    says: str  # what the message says it brings
    refuses: tuple[str, ...]  # options that would contradict it


CLASHES = (
    Clash("adapter run", "brings its own model, labels, prompts and views",
          ("labels", "label_set", "labels_file", "templates", "model", "pretrained", "depth_encoder", "views")),
    Clash("adapter checkpoint", "uses its own encoders and 10 views", ("depth_encoder", "views")),
    Clash("export", "carries its own model, labels, prompts, adapter and views",
          ("labels", "label_set", "labels_file", "templates", "model", "pretrained", "depth_encoder", "adapter", "views")),
)
# Options that only mean something for one source.
ONLY_FOR = {"which": ("adapter run",), "graph_precision": ("export",)}


def _refuse_clashes(spec: RunSpec, given: frozenset[str]) -> None:
    source = spec.source
    for clash in CLASHES:
        if clash.source != source:
            continue
        named = [name for name in clash.refuses if name in given]
        if named:
            anchor = "engine" if source == "export" else "adapter"
            pieces: list = [Opt(anchor), f" {getattr(spec, anchor)} {clash.says}: drop "]
            for i, name in enumerate(named):
                pieces += [", " if i else "", Opt(name)]
            raise OptionError(*pieces)
    for name, sources in ONLY_FOR.items():
        if name in given and source not in sources:
            raise OptionError(Opt(name), f" applies to an {' or '.join(sources)} only")


def _pick_backend(engine: str, backend: str | None) -> str:
    """The backend an `engine` path asks for: a lone .onnx file or a folder with ONNX graphs is run by
    ONNX Runtime, a folder holding only a TensorRT engine by TensorRT; an explicit backend wins."""
    if backend is not None:
        return backend
    path = Path(engine)
    if path.is_dir() and not any((path / name).is_file() for name in ("classifier.onnx", "classifier.int8.onnx")):
        if (path / "classifier.engine").is_file():
            return "trt"
    return "onnx"


def _check_backend(spec: RunSpec) -> None:
    if spec.engine is None:
        if spec.backend != "torch":
            raise OptionError(Opt("backend", spec.backend), " needs ", Opt("engine"), " (a `c2p export` folder)")
        return
    if not Path(spec.engine).exists():
        raise OptionError(Opt("engine"), f" {spec.engine}: no such file or folder")
    if spec.backend == "torch":
        raise OptionError(Opt("engine"), " runs on ", Opt("backend"), " onnx or trt, not torch")
    if spec.backend == "trt" and Path(spec.engine).is_file():
        raise OptionError(Opt("backend", "trt"), f" uses an export folder, not the file {spec.engine}")


def _check_paths(spec: RunSpec) -> None:
    for name in ("adapter", "depth_encoder"):
        value = getattr(spec, name)
        if value is not None and not Path(value).expanduser().exists():
            raise OptionError(Opt(name), f" {value}: no such file or folder")


# ---------------------------------------------------------------------------------------------
# Building and checking a description, once
# ---------------------------------------------------------------------------------------------

# Options checked against clip2point.option_table (the others are paths, labels and prompts).
TABLE_CHECKED = ("which", "backend", "graph_precision", "views", "n_points", "sampling", "up", "seed", "max_points",
                 "bin_columns", "precision", "batch_size", "top_k", "workers", "device")
_FIELDS = tuple(f.name for f in fields(RunSpec) if f.name != "given")


def describe_run(
    *,
    labels: str | Sequence[str] | None = None,
    labels_file: str | Path | None = None,
    label_set: str | None = None,
    templates: str | Sequence[str] | None = None,
    given: Iterable[str] | None = None,
    needs_labels: bool = True,
    **options,
) -> RunSpec:
    """The description of a run from its options (None: unset), checked once (`validate_options`).

    `given`: the options set on purpose (default: every option that is not None); an adapter or
    an export refuses those it would override. `needs_labels`: a zero-shot run must be told its
    labels (eval takes a dataset's classes instead).
    """
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r}; the options are: " + ", ".join(_FIELDS + ("labels_file",)))
    raw = {"labels": labels, "labels_file": labels_file, "label_set": label_set, "templates": templates, **options}
    given = frozenset(given) if given is not None else frozenset(k for k, v in raw.items() if v is not None)
    return validate_options(raw, given, needs_labels)


def validate_options(raw: Mapping[str, object], given: frozenset[str], needs_labels: bool = True) -> RunSpec:
    """Every check of a run's options; `describe_run` calls it once per run."""
    from .models.prompts import resolve_label_options, resolve_templates

    values = {k: v for k, v in raw.items() if k in _FIELDS and v is not None}
    for name in TABLE_CHECKED:
        if name in values:
            values[name] = option_table.check(name, values[name])
    for name in ("adapter", "engine", "depth_encoder"):
        if name in values:
            values[name] = str(values[name])
    if values.get("engine") is not None:
        values["backend"] = _pick_backend(values["engine"], raw.get("backend"))
    names = resolve_label_options(raw.get("labels"), raw.get("labels_file"), raw.get("label_set"))
    values["labels"] = tuple(names) if names is not None else None
    if raw.get("templates") is not None:
        templates = raw["templates"]
        values["templates"] = tuple(resolve_templates([templates] if isinstance(templates, str) else list(templates)))
    spec = RunSpec(**values, given=given)
    _check_backend(spec)
    _check_paths(spec)
    _refuse_clashes(spec, given)
    if needs_labels and spec.source == "zero-shot" and spec.labels is None:
        raise OptionError("give the labels: ", Opt("labels"), " (comma-separated class names), ", Opt("labels_file"),
                          " or ", Opt("label_set"))
    return spec


# ---------------------------------------------------------------------------------------------
# What the classifier brings
# ---------------------------------------------------------------------------------------------


def merge_read_settings(given: Mapping[str, object], trained: Mapping[str, object]) -> tuple[dict, list[OptionText]]:
    """Reading settings for data classified with an adapter: each option left unset (None) takes the
    run's value, an explicit one wins. Returns (settings, one warning line per explicit option that
    differs from the run's). Values still None mean "the caller's default"."""
    chosen, warnings = {}, []
    for key, value in given.items():
        run_value = trained.get(key)
        chosen[key] = run_value if value is None else value
        if value is not None and run_value is not None and value != run_value:
            warnings.append(OptionText(
                Opt(key, value), f" differs from the run's {run_value}: clouds are read in a way "
                "that differs from the adapter's training"
            ))
    return chosen, warnings


def complete(spec: RunSpec, classifier, *, fill_defaults: bool = True) -> tuple[RunSpec, list[OptionText]]:
    """`spec` with what `classifier` brought filled in: its labels, views, prompts and model, and the
    read settings an adapter was trained with for those left unset (else the defaults, unless
    `fill_defaults` is False: eval lets the dataset decide). Returns (spec, warnings about explicit
    read settings that differ from the adapter's)."""
    meta = dict(getattr(classifier, "meta", None) or {})
    read, warnings = merge_read_settings(
        {"n_points": spec.n_points, "sampling": spec.sampling, "up": spec.up}, meta.get("read") or {}
    )
    if fill_defaults:
        read = {k: _or_default(v, k) for k, v in read.items()}
    templates = meta.get("templates") or spec.templates
    filled = replace(
        spec, labels=tuple(classifier.labels), views=int(classifier.num_views),
        templates=tuple(templates) if templates else spec.templates,
        model=str(meta.get("model") or spec.model), pretrained=str(meta.get("pretrained") or spec.pretrained), **read,
    )
    return filled, warnings


# ---------------------------------------------------------------------------------------------
# What outputs record, and what --resume compares
# ---------------------------------------------------------------------------------------------

# Fields of a record that --resume compares, and how a message names each.
COMPARED: dict[str, Opt | str] = {
    "labels": Opt("labels"), "templates": Opt("templates"), "model": Opt("model"), "weights_id": "weights",
    "depth_encoder_id": "depth encoder weights", "adapter": Opt("adapter"), "which": Opt("which"),
    "backend": Opt("backend"), "engine": Opt("engine"), "views": Opt("views"), "n_points": Opt("n_points"),
    "sampling": Opt("sampling"), "up": Opt("up"), "seed": Opt("seed"), "precision": Opt("precision"),
}


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def record(spec: RunSpec, classifier=None) -> dict:
    """What an output records of its run: every field of the description that is known (after
    `complete`, all of them), with the weights' ids from `classifier.meta` when a classifier is given."""
    meta = dict(getattr(classifier, "meta", None) or {}) if classifier is not None else {}
    out = {
        "labels": list(spec.labels) if spec.labels is not None else None,
        "label_set": spec.label_set,
        "templates": list(spec.templates) if spec.templates is not None else None,
        "model": spec.model if spec.source == "zero-shot" or classifier is not None else None,
        "pretrained": spec.pretrained if spec.source == "zero-shot" or classifier is not None else None,
        "weights_id": meta.get("weights_id") or meta.get("weights"),
        "depth_encoder": spec.depth_encoder,
        "depth_encoder_id": meta.get("depth_encoder_id"),
        "adapter": _absolute(spec.adapter),
        "which": spec.which if spec.source == "adapter run" else None,
        "backend": spec.backend,
        "engine": _absolute(spec.engine),
        "views": spec.views if spec.views is not None or spec.source != "zero-shot" else option_table.default("views"),
        "n_points": spec.n_points, "sampling": spec.sampling, "up": spec.up, "seed": spec.seed,
        # what ran: "auto" is resolved only once the classifier exists (clip2point.models.precision)
        "precision": (getattr(classifier, "precision", None) if classifier is not None else None)
        or (None if spec.precision == "auto" else spec.precision),
    }
    if spec.source == "zero-shot":  # nothing else brings them: the defaults are what runs
        for name in ("n_points", "sampling", "up"):
            out[name] = _or_default(out[name], name)
        if out["templates"] is None:
            from .defaults import PROMPT_TEMPLATE

            out["templates"] = [PROMPT_TEMPLATE]
    if classifier is not None and meta.get("version"):
        out["version"] = meta["version"]
    return {k: v for k, v in out.items() if v is not None}


def _show(value) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(old: Mapping[str, object], new: Mapping[str, object]) -> list[tuple[Opt | str, object, object]]:
    """(name, earlier value, new value) of each compared field both records hold and that differs."""
    found = []
    for key, name in COMPARED.items():
        if key in old and key in new and _comparable(old[key]) != _comparable(new[key]):
            found.append((name, old[key], new[key]))
    return found


def _comparable(value):
    return [_comparable(v) for v in value] if isinstance(value, (list, tuple)) else value


def describe_differences(found: Sequence[tuple[Opt | str, object, object]]) -> list:
    """OptionText pieces naming each difference: `labels cube,sphere -> cube,torus; model ...`."""
    pieces: list = []
    for i, (name, old, new) in enumerate(found):
        pieces.append("; " if i else "")
        pieces.append(name)
        if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and sorted(map(str, old)) == sorted(map(str, new)):
            pieces.append(" in another order")
        else:
            pieces.append(f" {_show(old)} -> {_show(new)}")
    return pieces
