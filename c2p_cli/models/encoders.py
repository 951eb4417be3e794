"""open_clip models: loading (tag / local file / random), depth encoders, and the folded stem.

`load_clip` resolves weights itself instead of letting `open_clip.create_model(pretrained=tag)`
download them, for two reasons: offline it must fail within seconds with a message saying what
to do (open_clip would retry the network and raise a generic RuntimeError), and every file is read
through `clip2point.store.checkpoints.load_state_dict_file` (weights_only=True or safetensors; open_clip's
own loader falls back to a full unpickle when torch.load raises TypeError).

The folded stem. The renderer's 3-channel output is one depth map d copied to 3 channels and
normalised per channel, x_c = (d - mean_c) / std_c. The first convolution then computes
    sum_c W_c * x_c = (sum_c W_c / std_c) * d  -  sum_c W_c * mean_c / std_c
so a 1-channel convolution with W' = sum_c W_c / std_c and a bias gives the same result from d
alone (a third of the input bytes, no normalisation pass). `FoldedStemConv` keeps the original
3-channel weight as its parameter and derives W' and the bias in forward, so its state dict is the
unfolded tower's (checkpoints load into any open_clip visual tower), training it trains the real
weight, and exporters constant-fold the derivation away.
Padded convolutions (ModifiedResNet's stem: 3x3, padding 1) pad the *normalised* input with
zeros, which is not the same as zero-padding d; the bias term then differs at the borders. We
handle that exactly: the bias kernel is convolved with a ones image under the same zero padding,
which gives the correct per-position bias, border included.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import defaults
from ..errors import CheckpointError, ModelError, Opt, OptionError, WeightsUnavailableError
from .open_clip_import import import_open_clip, require_timm
from .shipped import MODEL_CONFIGS_DIR, SHIPPED_WEIGHTS, WEIGHTS_DIR, shipped_tags

# open_clip's random init is not seeded; we seed it so that `--pretrained none` is reproducible.
RANDOM_INIT_SEED = 0
LOCAL_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
DEPTH_ENCODER_FORMAT = "clip2point-depth-encoder"
# Prefixes that wrap the depth tower in CLIP2Point's pre-training checkpoints
# (DataParallel "module.", the "point_model" depth branch, a model holder, CLIP's "visual.").
_WRAPPER_PREFIXES = ("point_model.", "depth_model.", "model.", "visual.")
_WEIGHTS_HINT = (
    "Run once with network access, or give a local weights file (c2p: --pretrained /path/to/weights.bin), "
    "or 'none' for random weights"
)

_configs_registered = False

def register_model_configs() -> None:
    """Add this package's model_configs/ (tiny test architectures) to open_clip's registry, once."""
    global _configs_registered
    if _configs_registered:
        return
    open_clip = import_open_clip()
    open_clip.add_model_config(MODEL_CONFIGS_DIR)
    _configs_registered = True


@dataclass
class ClipBundle:
    """A frozen open_clip CLIP model in eval mode plus what identifies its weights."""

    model: Any
    model_name: str
    pretrained: str
    weights_id: str
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer(self):
        """open_clip's tokenizer of the model, made when first used: it reads a 1.3 MB BPE table
        (0.15 s) that a run whose text features are cached never needs."""
        if self._tokenizer is None:
            self._tokenizer = import_open_clip().get_tokenizer(self.model_name)
        return self._tokenizer


def _list_models_hint() -> str:
    return "list them with: python -c \"import open_clip; print(open_clip.list_models())\""


def check_model_name(model: str) -> str:
    """The open_clip config name for `model` ("ViT-B/32" -> "ViT-B-32"); ModelError if unknown."""
    open_clip = import_open_clip()
    register_model_configs()
    name = str(model).strip().replace("/", "-")
    names = open_clip.list_models()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ModelError(f"unknown model {model!r}{hint} ({_list_models_hint()})")


def _is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or (os.altsep is not None and os.altsep in spec)
        or spec.lower().endswith(LOCAL_WEIGHT_SUFFIXES)
        or Path(spec).expanduser().exists()
    )


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _probe_host(url: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to `url`'s host (or the HTTPS proxy in front of it) opens quickly, else why not."""
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 8080
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"cannot reach {host}:{port}: {e.strerror or e}"


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """(repo_id, filenames to try, safetensors first) for an open_clip `hf_hub` entry."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    # open_clip's convention: "org/repo/" means the default file name, "org/repo/file" names one.
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    names = []
    if filename == HF_WEIGHTS_NAME:
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    names.append(filename)
    return repo_id, names


def _shipped_tag(model: str, spec: str, open_clip_tags: list[str]) -> str | None:
    """The shipped tag that `spec` names for `model`, or None. The default `pretrained` stands for
    a model's shipped weights when open_clip has none of that name for it."""
    tags = shipped_tags(model)
    if spec.lower() in tags:
        return spec.lower()
    if spec == defaults.PRETRAINED and spec not in open_clip_tags and len(tags) == 1:
        return tags[0]
    return None


def shipped_weights_path(model: str, tag: str) -> Path:
    """The file of shipped weights (model, tag); WeightsUnavailableError when the install lacks it."""
    entry = SHIPPED_WEIGHTS[(model, tag)]
    path = WEIGHTS_DIR / entry.file
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{path}: the shipped {model} weights are missing from this installation "
            "(reinstall clip2point, or train them again: make demo-model)"
        )
    return path


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _fetch_tag_weights(model: str, tag: str, cfg: dict) -> Path:
    """Local path of a tag's weights: the Hugging Face cache first, then (unless offline) a download."""
    if cfg.get("file"):
        return Path(cfg["file"])
    what = f"could not get {model} {tag!r} weights"
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:
        raise WeightsUnavailableError(
            f"{what}: open_clip lists only a URL for it ({cfg.get('url', '?')}); download it and give the "
            f"file instead (c2p: --pretrained /path/to/file)"
        )
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as e:
        raise WeightsUnavailableError(f"{what}: huggingface_hub is not installed. {_WEIGHTS_HINT}") from e

    repo_id, names = _hf_candidates(hf_hub)
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name, local_files_only=True))
        except Exception:  # not cached (LocalEntryNotFoundError) or an unreadable cache entry
            continue
    if _is_offline():
        raise WeightsUnavailableError(
            f"{what}: no network and not in the Hugging Face cache (HF_HUB_OFFLINE=1). {_WEIGHTS_HINT}"
        )
    from huggingface_hub import constants

    # huggingface_hub retries unreachable hosts with backoff for about a minute per file; a short
    # direct probe turns "no network" into an answer within seconds.
    unreachable = _probe_host(constants.ENDPOINT)
    if unreachable:
        raise WeightsUnavailableError(f"{what}: no network ({unreachable}) and not in the Hugging Face cache. {_WEIGHTS_HINT}")
    last: BaseException | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name, etag_timeout=constants.HF_HUB_ETAG_TIMEOUT))
        except LocalEntryNotFoundError as e:  # the Hub was unreachable and the cache has no copy
            raise WeightsUnavailableError(
                f"{what} from huggingface.co/{repo_id} ({_first_line(e)}). {_WEIGHTS_HINT}"
            ) from e
        except (EntryNotFoundError, RepositoryNotFoundError) as e:
            last = e  # e.g. no safetensors variant in this repo: try the next file name
            continue
        except Exception as e:  # connection refused, DNS, timeouts, proxy errors: all mean "no network"
            raise WeightsUnavailableError(
                f"{what} from huggingface.co/{repo_id} ({_first_line(e)}). {_WEIGHTS_HINT}"
            ) from e
    raise WeightsUnavailableError(
        f"{what}: huggingface.co/{repo_id} has none of {', '.join(names)} "
        f"({_first_line(last) if last else 'not found'}). {_WEIGHTS_HINT}"
    )


def _describe_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], limit: int = 3) -> str:
    """'' when `given` fits `expected` exactly, else a short account of the first differences."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from clip2point.store.checkpoints import load_state_dict_file

    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found")
    return load_state_dict_file(path)


SPARSE_ROWS, SPARSE_VALUES = ".rows", ".values"


def _expand_sparse_tables(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Rebuild tables stored as their non-zero rows: "K.rows" [n] int + "K.values" [n, W] -> "K" (zeros elsewhere).

    The shipped c2p-demo weights store the text tower's 49408-row token embedding this way (only
    the tokens of its training prompts were ever trained). Every index is checked before use.
    """
    for key, table in expected.items():
        rows_key, values_key = key + SPARSE_ROWS, key + SPARSE_VALUES
        if rows_key not in state and values_key not in state:
            continue
        if key in state or rows_key not in state or values_key not in state or table.ndim != 2:
            raise ModelError(f"{path}: {key} must be given either whole or as {rows_key} + {values_key}")
        rows, values = state.pop(rows_key), state.pop(values_key)
        n, width = table.shape
        if (
            rows.ndim != 1 or rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool
            or not values.is_floating_point() or tuple(values.shape) != (rows.shape[0], width)
        ):
            raise ModelError(
                f"{path}: {rows_key} {list(rows.shape)} ({rows.dtype}) and {values_key} {list(values.shape)} "
                f"do not describe rows of a [{n}, {width}] table"
            )
        rows = rows.to(torch.int64)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n or rows.unique().numel() != rows.numel()):
            raise ModelError(f"{path}: {rows_key} holds indices outside [0, {n}) or repeated ones")
        full = torch.zeros((n, width), dtype=values.dtype)
        full[rows] = values
        state[key] = full
    return state


def _load_clip_state(clip: nn.Module, path: Path) -> None:
    """Load a full CLIP state dict file into `clip` (strict), with open_clip's format fix-ups."""
    from open_clip.convert import convert_state_dict

    state = _strip_module_prefix(_read_state(path))
    state = _expand_sparse_tables(state, clip.state_dict(), path)
    state = convert_state_dict(clip, state)
    expected = clip.state_dict()
    if "logit_scale" in state and "logit_scale" in expected:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    if "logit_bias" in expected and "logit_bias" not in state:
        state["logit_bias"] = torch.zeros_like(expected["logit_bias"])
    state.pop("text.transformer.embeddings.position_ids", None)
    problem = _describe_mismatch(expected, state)
    if problem:
        raise ModelError(f"{path}: weights do not fit this CLIP architecture ({problem})")
    clip.load_state_dict(state, strict=True)


# torch.nn.init's fills, which module constructors and open_clip's init_parameters call by attribute.
_INIT_FILLS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def _fills_skipped():
    """torch.nn.init's fills as no-ops, for a model that a strict load_state_dict overwrites next:
    random init costs 1.3 s of ViT-B-32's cold start. Buffers computed in constructors (attention
    masks) are not fills and stay right; a parameter the file lacks fails the strict load."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FILLS if hasattr(nn.init, name)}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fill in saved.items():
            setattr(nn.init, name, fill)


def _seeded_create(name: str, quick_gelu: bool, weights_follow: bool = False):
    open_clip = import_open_clip()
    require_timm(open_clip, name)
    # create_model(pretrained=None) logs "initialized randomly" on the root logger even when weights
    # follow; library code stays quiet, so silence it for this call only.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]), (_fills_skipped() if weights_follow else contextlib.nullcontext()):
            torch.manual_seed(RANDOM_INIT_SEED)
            return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")
    finally:
        logging.disable(previous)


def load_clip(model: str = defaults.MODEL, pretrained: str = defaults.PRETRAINED, device="cpu") -> ClipBundle:
    """An open_clip model, frozen and in eval mode, with weights from a tag, a local file or "none".

    - a tag (`open_clip.list_pretrained_tags_by_model(model)`): the Hugging Face cache, else a
      download (unless HF_HUB_OFFLINE=1); WeightsUnavailableError within seconds when neither works.
    - a .bin / .pt / .pth / .safetensors file: a full CLIP state dict, loaded without unpickling code.
    - "none": random weights, seeded with RANDOM_INIT_SEED so that runs are reproducible.
    - a tag of SHIPPED_WEIGHTS (`c2p-demo` for the model c2p-demo): weights inside the package,
      offline. A model whose only weights are shipped takes them when `pretrained` is the default.
    A tag that open_clip marks as QuickGELU (OpenAI's) gets QuickGELU; a local file of such weights
    needs the "-quickgelu" model name (e.g. ViT-B-32-quickgelu), as in open_clip.
    """
    open_clip = import_open_clip()
    name = check_model_name(model)
    spec = str(pretrained).strip()
    tags = open_clip.list_pretrained_tags_by_model(name)
    quick_gelu = False
    weights_path: Path | None = None
    shipped = _shipped_tag(name, spec, tags)
    if spec.lower() == "none":
        weights_id = f"{name}/none/seed{RANDOM_INIT_SEED}"
    elif shipped is not None:
        weights_path = shipped_weights_path(name, shipped)
        spec = shipped
        # the file's hash too, so that caches keyed by weights_id (text features) follow a retraining
        weights_id = f"{name}/{shipped}/sha256:{sha256_file(weights_path)[:12]}"
    elif open_clip.pretrained.is_pretrained_cfg(name, spec):
        cfg = open_clip.pretrained.get_pretrained_cfg(name, spec)
        # OpenAI's and some LAION-400M weights were trained with QuickGELU; without it they run but
        # give worse features, which open_clip only warns about.
        quick_gelu = bool(cfg.get("quick_gelu", False))
        spec = spec.lower().replace("-", "_")  # open_clip's tag normalisation: one id per weights
        weights_path = _fetch_tag_weights(name, spec, cfg)
        weights_id = f"{name}/{spec}"
    elif _looks_like_path(spec):
        weights_path = Path(spec).expanduser()
        if not weights_path.is_file():
            raise WeightsUnavailableError(f"{weights_path}: weights file not found")
        weights_id = f"{name}/sha256:{sha256_file(weights_path)[:12]}"
    else:
        tags = [*tags, *shipped_tags(name)]
        valid = ", ".join(tags) if tags else f"{name} has no pretrained tags"
        raise OptionError(
            Opt("pretrained"), f" {spec!r} is not a tag of {name} (valid: {valid}), a weights file "
            f"({'/'.join(LOCAL_WEIGHT_SUFFIXES)}) or none"
        )

    clip = _seeded_create(name, quick_gelu, weights_follow=weights_path is not None)
    if weights_path is not None:
        _load_clip_state(clip, weights_path)
    clip.eval().requires_grad_(False)
    if isinstance(device, str):
        from ..distributed import resolve_device

        device = resolve_device(device)
    clip.to(device)
    return ClipBundle(
        model=clip,
        model_name=name,
        pretrained=spec,
        weights_id=weights_id,
    )


class FoldedStemConv(nn.Module):
    """A 3-channel first convolution applied to a 1-channel depth map, with CLIP's normalisation folded in.

    Same output as `conv(normalise(d.expand(3)))`, exact at the borders too (see the module docs).
    The parameters are the original ones (`weight` [O, 3, k, k], optional `bias`), so the state dict
    is unchanged by folding.
    """

    in_channels = 1

    def __init__(self, conv: nn.Conv2d, mean=defaults.CLIP_MEAN, std=defaults.CLIP_STD):
        super().__init__()
        if conv.in_channels != 3 or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ModelError(
                f"cannot fold a first convolution with {conv.in_channels} input channels, "
                f"groups={conv.groups}, padding_mode={conv.padding_mode!r}"
            )
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = conv.stride
        self.dilation = conv.dilation
        padding = conv.padding
        if isinstance(padding, str):
            if padding != "valid":  # "same" depends on the input size; not worth supporting here
                raise ModelError(f"cannot fold a first convolution with padding={padding!r}")
            padding = (0, 0)
        self.padding = tuple(padding)
        # On the weight's device: folding happens after the tower was moved (e.g. to CUDA).
        std_t = torch.tensor(std, dtype=torch.float32, device=conv.weight.device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=conv.weight.device)
        # Not persistent: the state dict must stay exactly the unfolded tower's.
        self.register_buffer("inv_std", (1.0 / std_t).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean_over_std", (mean_t / std_t).view(1, 3, 1, 1), persistent=False)

    def folded_weight(self) -> torch.Tensor:
        """W' = sum_c W_c / std_c, shape [O, 1, k, k]."""
        return (self.weight * self.inv_std.to(self.weight.dtype)).sum(1, keepdim=True)

    def bias_kernel(self) -> torch.Tensor:
        """-sum_c W_c * mean_c / std_c, shape [O, 1, k, k]: what the mean contributes per tap."""
        return -(self.weight * self.mean_over_std.to(self.weight.dtype)).sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Derived in the weight's dtype (float32 also when the rest of the tower runs in bf16: see
        # clip2point.models.precision), then cast to the input's.
        weight = self.folded_weight().to(x.dtype)
        kernel = self.bias_kernel()
        if not any(self.padding):
            bias = kernel.sum((1, 2, 3))
            if self.bias is not None:
                bias = bias + self.bias
            return F.conv2d(x, weight, bias.to(x.dtype), self.stride, 0, self.dilation)
        out = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)
        # Zero padding of the normalised input drops the mean term for taps outside the image:
        # convolving the bias kernel with a ones image under the same padding reproduces that.
        ones = torch.ones_like(x[:1], dtype=kernel.dtype)
        border_bias = F.conv2d(ones, kernel, self.bias, self.stride, self.padding, self.dilation)
        return out + border_bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"1 -> {self.weight.shape[0]}, kernel={tuple(self.weight.shape[2:])}, stride={self.stride}, padding={self.padding}"


def fold_first_conv(visual: nn.Module) -> nn.Module:
    """Replace `visual.conv1` (ViT patch embedding or ModifiedResNet's first stem conv) by its folded form.

    In place; returns `visual`. ModelError when the tower has no foldable `conv1` (e.g. timm towers).
    """
    conv = getattr(visual, "conv1", None)
    if isinstance(conv, FoldedStemConv):
        return visual
    if not isinstance(conv, nn.Conv2d):
        raise ModelError(f"cannot fold the stem of {type(visual).__name__}: it has no conv1 convolution")
    visual.conv1 = FoldedStemConv(conv)
    return visual


class DepthEncoder(nn.Module):
    """A CLIP visual tower applied to depth maps: x[N, C, S, S] -> features [N, D] (not normalised).

    `in_channels` is 1 when the stem is folded (input: the normalised depth map itself), else 3
    (input: the map copied to 3 channels and normalised with CLIP's mean / std).
    """

    def __init__(self, visual: nn.Module, in_channels: int):
        super().__init__()
        self.visual = visual
        self.in_channels = int(in_channels)
        size = getattr(visual, "image_size", defaults.IMAGE_SIZE)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.output_dim = int(getattr(visual, "output_dim", 0) or 0)
        # Set by clip2point.models.precision.apply_precision, never saved: "fp32" runs the tower as
        # built; CPU bf16 casts the inputs to the (cast) weights' dtype; CUDA fp16 / bf16 autocasts.
        self.precision = "fp32"
        self.cast_inputs: torch.dtype | None = None
        self.channels_last = False
        self.autocast: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is not None:
            with torch.autocast(x.device.type, dtype=self.autocast):
                return self.visual(x).float()
        if self.cast_inputs is not None:
            layout = torch.channels_last if self.channels_last else torch.preserve_format
            return self.visual(x.to(self.cast_inputs, memory_format=layout)).float()
        return self.visual(x)


def _visual_subdict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The visual tower's entries of a checkpoint, wrapper prefixes removed.

    Handles this project's files (keys as in `visual.` with or without that prefix) and CLIP2Point's
    pre-training checkpoints ("module.point_model.visual.conv1.weight" and the like), where other
    entries (image branch, optimiser scalars) are ignored.
    """
    state = _strip_module_prefix(state)
    for prefix in _WRAPPER_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            state = sub
    return state


DEPTH_ENCODER_FILE = "depth_encoder.safetensors"


def resolve_depth_encoder(path: str | Path) -> Path:
    """A depth-encoder weights file; a `c2p pretrain` run folder stands for its depth_encoder.safetensors."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / DEPTH_ENCODER_FILE).is_file():
            raise WeightsUnavailableError(f"{path}: a folder without {DEPTH_ENCODER_FILE} (pass a `c2p pretrain` run or a weights file)")
        return path / DEPTH_ENCODER_FILE
    return path


def load_visual_weights(visual: nn.Module, path: str | Path) -> None:
    """Load depth-encoder weights (this project's safetensors or CLIP2Point's checkpoint) into a tower."""
    path = resolve_depth_encoder(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: depth-encoder weights not found")
    state = _visual_subdict(_read_state(path))
    expected = visual.state_dict()
    problem = _describe_mismatch(expected, state)
    if problem:
        raise ModelError(f"{path}: weights do not fit this model's visual tower ({problem})")
    visual.load_state_dict(state, strict=True)


def build_depth_encoder(
    bundle: ClipBundle, weights: str | Path | None = None, fold: bool = True, trainable: bool = False
) -> DepthEncoder:
    """A copy of CLIP's visual tower as a DepthEncoder, with optional depth weights and a folded stem.

    Frozen and in eval mode unless `trainable` (then in train mode with gradients). Towers without a
    foldable first convolution (timm towers) stay unfolded: check `in_channels`.
    """
    visual = copy.deepcopy(bundle.model.visual)
    if weights is not None:
        load_visual_weights(visual, weights)
    in_channels = 3
    if fold:
        try:
            fold_first_conv(visual)
            in_channels = 1
        except ModelError:
            in_channels = 3
    encoder = DepthEncoder(visual, in_channels)
    encoder.train(trainable).requires_grad_(trainable)
    return encoder


def clip_visual_encoder(bundle: ClipBundle, fold: bool = True) -> DepthEncoder:
    """CLIP's own visual tower (frozen) as a DepthEncoder: the second path of the (G)DPA adapter."""
    return build_depth_encoder(bundle, weights=None, fold=fold)


def save_depth_encoder(encoder: DepthEncoder, path: str | Path, meta: dict | None = None) -> None:
    """Write the tower's (unfolded) state dict as safetensors, plus a `.json` beside it with `meta`.

    The state dict is the same whether the encoder is folded or not, so the file loads into any
    open_clip visual tower of the same architecture (and into `build_depth_encoder(weights=...)`).
    """
    from clip2point.store.checkpoints import save_tensors, write_json

    from .. import __version__

    path = Path(path)
    info = {"format": DEPTH_ENCODER_FORMAT, "version": __version__, **(meta or {})}
    state = encoder.visual.state_dict()
    save_tensors(path, state, metadata={"clip2point": json.dumps(info, sort_keys=True, default=str)})
    write_json(path.with_suffix(".json"), info)


def read_depth_encoder_meta(path: str | Path) -> dict:
    """The JSON meta written next to a depth encoder by `save_depth_encoder` ({} for foreign files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("clip2point")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return json.loads(text) if text else {}
