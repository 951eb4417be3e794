"""TensorRT path without TensorRT: the one-line errors, the profile shapes, the metadata, and the
order of TensorRT 10 API calls.

TensorRT cannot be installed here (its wheels come from NVIDIA's index and need an NVIDIA GPU), so
`FakeTensorRT` below stands in for the `tensorrt` module. It records every call and checks only
what a real TensorRT would also refuse (unknown tensor names, shapes outside the profile).
These are CALL-ORDER TESTS, NOT TENSORRT RUNS: they prove that `clip2point.export.tensorrt` and
`clip2point.export.tensorrt.TensorRTHead` drive the TensorRT 10 Python API in the right order with the right
shapes, names and pointers; they say nothing about TensorRT's numerics (the engine-vs-ONNX
Runtime check in `build_and_check` does that on a machine with TensorRT).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point.errors import BackendUnavailableError, ModelError, UsageError
from clip2point.export import metadata as md
from clip2point.export import tensorrt as ttrt

FIXED = (6, 1, 224, 224)


class FakeTensorRT(types.ModuleType):
    """A recording stand-in for `import tensorrt` (TensorRT 10 names only)."""

    def __init__(self, version: str = "10.7.0", parse_ok: bool = True, build_ok: bool = True, num_classes: int = 5):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parse_ok, self.build_ok, self.num_classes = parse_ok, build_ok, num_classes
        fake = self

        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        class ILogger:
            def __init__(self):
                pass

        ILogger.Severity = Severity
        self.ILogger = ILogger
        self.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
        self.BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8")
        self.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

        def rec(name):
            def record(*args):
                fake.calls.append((name, *args))

            return record

        class TimingCache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                fake.calls.append(("TimingCache.serialize",))
                return b"timing:" + self.data

        class Config:
            set_memory_pool_limit = staticmethod(rec("set_memory_pool_limit"))
            set_flag = staticmethod(rec("set_flag"))
            add_optimization_profile = staticmethod(rec("add_optimization_profile"))

            def create_timing_cache(self, data):
                fake.calls.append(("create_timing_cache", bytes(data)))
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, list(lo), list(opt), list(hi)))

        class Tensor:
            name = md.DEPTH_INPUT
            shape = (-1, *FIXED)

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return Tensor()

        class Builder:
            def __init__(self, logger):
                fake.calls.append(("Builder",))

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                fake.calls.append(("create_builder_config",))
                return Config()

            def create_optimization_profile(self):
                fake.calls.append(("create_optimization_profile",))
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build_serialized_network",))
                return memoryview(b"ENGINE") if fake.build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                fake.calls.append(("OnnxParser",))

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                return fake.parse_ok

            def get_error(self, i):
                return "In node 3 (Foo): UNSUPPORTED_NODE"

        self.Builder, self.OnnxParser = Builder, OnnxParser
        self.Runtime = FakeRuntime
        self.fake = fake


class FakeRuntime:
    """Deserialises into a FakeEngine whose context reads/writes the raw pointers it is given."""

    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        return FakeEngine(sys.modules["tensorrt"]) if bytes(data) == b"ENGINE" else None


class FakeEngine:
    def __init__(self, trt):
        self.trt, self.num_io_tensors = trt, 2

    def get_tensor_name(self, i):
        return [md.DEPTH_INPUT, md.LOGITS_OUTPUT][i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == md.DEPTH_INPUT else self.trt.TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name, profile):
        return [(1, *FIXED), (2, *FIXED), (3, *FIXED)]  # max batch 3: a batch of 7 runs as 3 + 3 + 1

    def get_tensor_shape(self, name):
        return (-1, self.trt.num_classes)

    def create_execution_context(self):
        return FakeContext(self.trt)


class FakeContext:
    """execute_async_v3 computes logits[b, k] = 2 * depth[b].flatten()[k] through the bound pointers."""

    def __init__(self, trt):
        self.trt, self.shapes, self.addresses = trt, {}, {}

    def set_input_shape(self, name, shape):
        self.trt.calls.append(("set_input_shape", name, tuple(shape)))
        assert name == md.DEPTH_INPUT and tuple(shape[1:]) == FIXED and 1 <= shape[0] <= 3
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.trt.calls.append(("set_tensor_address", name))
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.trt.calls.append(("execute_async_v3", stream))
        shape = self.shapes[md.DEPTH_INPUT]
        count = math.prod(shape)
        depth = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses[md.DEPTH_INPUT]))
        k = self.trt.num_classes
        out = np.ctypeslib.as_array((ctypes.c_float * (shape[0] * k)).from_address(self.addresses[md.LOGITS_OUTPUT]))
        out[:] = 2 * depth.reshape(shape[0], -1)[:, :k].ravel()
        return True


@pytest.fixture
def fake_trt(monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return fake


def _export_folder(tmp_path: Path) -> Path:
    """A folder with metadata and a (placeholder) classifier.onnx: the fake parser does not read it."""
    (tmp_path / md.CLASSIFIER_ONNX).write_bytes(b"onnx placeholder")
    md.write_metadata(tmp_path, {
        "format": md.FORMAT, "format_version": md.FORMAT_VERSION, "labels": list("abcde"), "views": [[0, 0]] * 6,
        "image_size": 224, "radius": 0.02, "in_channels": 1,
        "graphs": {"classifier": {"file": md.CLASSIFIER_ONNX, "bytes": 16}},
    })  # fmt: skip
    return tmp_path


def test_missing_tensorrt_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError) as info:
        ttrt.import_tensorrt()
    assert str(info.value) == ttrt.INSTALL_HINT and "\n" not in ttrt.INSTALL_HINT
    assert "pip install tensorrt" in ttrt.INSTALL_HINT and "NVIDIA" in ttrt.INSTALL_HINT


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(version="8.6.1"))
    with pytest.raises(BackendUnavailableError, match="TensorRT 8.6.1 is too old"):
        ttrt.import_tensorrt()


def test_missing_gpu_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError) as info:
        ttrt.require_cuda()
    assert "needs an NVIDIA GPU" in str(info.value) and "\n" not in str(info.value)


def test_profile_shapes():
    assert md.profile_batches(64) == (1, 32, 64)
    assert md.profile_batches(1) == (1, 1, 1)
    assert md.profile_batches(3) == (1, 1, 3)
    assert md.profile_batches(100) == (1, 32, 100)
    assert md.profile_batches(16, opt_batch=16) == (1, 16, 16)
    with pytest.raises(UsageError, match="opt_batch must be between 1 and max_batch"):
        md.profile_batches(8, opt_batch=9)
    with pytest.raises(UsageError, match="max_batch must be at least 1"):
        md.profile_batches(0)
    assert ttrt.profile_shapes(FIXED, 8) == {
        "min": [1, 6, 1, 224, 224], "opt": [4, 6, 1, 224, 224], "max": [8, 6, 1, 224, 224],
    }  # fmt: skip
    with pytest.raises(ModelError, match="only the batch"):
        ttrt.profile_shapes((6, -1, 224, 224), 8)


def test_build_calls_the_tensorrt10_api_in_order(fake_trt, tmp_path):
    """Call order (not a TensorRT run): parse, config (workspace, FP16), profile, timing cache, build, save."""
    onnx_path = tmp_path / "classifier.onnx"
    onnx_path.write_bytes(b"x")
    cache = tmp_path / md.TIMING_CACHE_FILE
    info = ttrt.build_engine(onnx_path, tmp_path / md.ENGINE_FILE, max_batch=16, workspace_gib=2, timing_cache=cache)
    names = [c[0] for c in fake_trt.calls]
    assert names == [
        "Builder", "create_network", "OnnxParser", "parse_from_file", "create_builder_config",
        "set_memory_pool_limit", "set_flag", "create_optimization_profile", "set_shape", "add_optimization_profile",
        "create_timing_cache", "set_timing_cache", "build_serialized_network", "TimingCache.serialize",
    ]  # fmt: skip
    calls = {c[0]: c[1:] for c in fake_trt.calls}
    assert calls["create_network"] == (0,)  # explicit batch is TensorRT 10's only mode
    assert calls["parse_from_file"] == (str(onnx_path),)
    assert calls["set_memory_pool_limit"] == (fake_trt.MemoryPoolType.WORKSPACE, 2 << 30)
    assert calls["set_flag"] == (fake_trt.BuilderFlag.FP16,)
    assert calls["set_shape"] == ("depth", [1, *FIXED], [8, *FIXED], [16, *FIXED])
    assert calls["create_timing_cache"] == (b"",) and calls["set_timing_cache"] == (b"", False)
    assert (tmp_path / md.ENGINE_FILE).read_bytes() == b"ENGINE" and cache.read_bytes() == b"timing:"
    assert info["precision"] == "fp16" and info["profile"]["max"] == [16, *FIXED] and info["version"] == "10.7.0"
    assert info["timing_cache_reused"] is False

    fake_trt.calls.clear()
    info = ttrt.build_engine(onnx_path, tmp_path / md.ENGINE_FILE, max_batch=16, timing_cache=cache)
    assert ("create_timing_cache", b"timing:") in fake_trt.calls and info["timing_cache_reused"] is True


def test_parser_and_builder_failures_are_model_errors(fake_trt, tmp_path):
    onnx_path = tmp_path / "classifier.onnx"
    onnx_path.write_bytes(b"x")
    fake_trt.parse_ok = False
    with pytest.raises(ModelError, match="UNSUPPORTED_NODE"):
        ttrt.build_engine(onnx_path, tmp_path / "e.engine", max_batch=4)
    fake_trt.parse_ok, fake_trt.build_ok = True, False
    with pytest.raises(ModelError, match="could not build an engine"):
        ttrt.build_engine(onnx_path, tmp_path / "e.engine", max_batch=4)
    assert not (tmp_path / "e.engine").exists()


def test_build_and_check_records_the_engine_in_the_metadata(fake_trt, tmp_path):
    folder = _export_folder(tmp_path)
    meta = ttrt.build_and_check(folder, max_batch=8, check=False)
    assert meta == md.read_metadata(folder)
    assert meta["graphs"]["engine"] == {"file": md.ENGINE_FILE, "bytes": 6, "built_from": md.CLASSIFIER_ONNX}
    trt_meta = meta["tensorrt"]
    assert trt_meta["profile"] == {"min": [1, *FIXED], "opt": [4, *FIXED], "max": [8, *FIXED]}
    assert trt_meta["precision"] == "fp16" and trt_meta["timing_cache"] == md.TIMING_CACHE_FILE
    assert (folder / md.TIMING_CACHE_FILE).is_file()


def test_engine_head_binds_pointers_and_chunks_batches(fake_trt, tmp_path, monkeypatch):
    """TensorRTHead against the fake engine (call-order test, CPU memory standing in for CUDA memory)."""
    monkeypatch.setattr(ttrt, "require_cuda", lambda device="cuda": torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=1234))
    (tmp_path / md.ENGINE_FILE).write_bytes(b"ENGINE")
    head = ttrt.TensorRTHead(tmp_path / md.ENGINE_FILE)
    assert (head.min_batch, head.max_batch, head.num_classes) == (1, 3, 5)
    depth = torch.rand(7, *FIXED)
    logits = head(depth)
    torch.testing.assert_close(logits, 2 * depth.flatten(1)[:, :5])
    shapes = [c[2][0] for c in fake_trt.calls if c[0] == "set_input_shape"]
    assert shapes == [3, 3, 1]
    assert [c[0] for c in fake_trt.calls[:4]] == ["set_input_shape", "set_tensor_address", "set_tensor_address", "execute_async_v3"]
    assert ("execute_async_v3", 1234) in fake_trt.calls
    with pytest.raises(UsageError, match="do not fit"):
        head(torch.rand(2, 6, 3, 224, 224))

    (tmp_path / "bad.engine").write_bytes(b"garbage")
    from clip2point.errors import CheckpointError

    with pytest.raises(CheckpointError, match="cannot load this engine"):
        ttrt.TensorRTHead(tmp_path / "bad.engine")


def test_engine_context_is_created_and_run_on_the_engines_gpu(fake_trt, tmp_path, monkeypatch):
    """With another GPU current, TensorRT would allocate the context and enqueue on the wrong device."""
    current = ["cuda:0"]  # the process's current device, not the engine's

    @contextlib.contextmanager
    def device(d):
        current.append(str(d))
        try:
            yield
        finally:
            current.pop()

    seen = []
    create, execute = FakeEngine.create_execution_context, FakeContext.execute_async_v3
    monkeypatch.setattr(FakeEngine, "create_execution_context", lambda self: seen.append(("context", current[-1])) or create(self))
    monkeypatch.setattr(FakeContext, "execute_async_v3",
                        lambda self, stream: seen.append(("run", current[-1])) or execute(self, stream))
    monkeypatch.setattr(ttrt, "require_cuda", lambda d="cuda": "cuda:1")
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: types.SimpleNamespace(cuda_stream=1))
    (tmp_path / md.ENGINE_FILE).write_bytes(b"ENGINE")
    head = ttrt.TensorRTHead(tmp_path / md.ENGINE_FILE, "cuda:1")
    head.device = torch.device("cpu")  # CPU memory stands in for cuda:1's in the pointer arithmetic
    monkeypatch.setattr(torch.cuda, "device", lambda d: device("cuda:1" if str(d) == "cpu" else d))
    head(torch.rand(4, *FIXED))
    assert seen == [("context", "cuda:1"), ("run", "cuda:1"), ("run", "cuda:1")]


def test_a_missing_or_rejected_timing_cache_never_fails_a_build(fake_trt, tmp_path, monkeypatch):
    onnx_path = tmp_path / "classifier.onnx"
    onnx_path.write_bytes(b"x")
    cache = tmp_path / md.TIMING_CACHE_FILE
    engine = tmp_path / md.ENGINE_FILE
    config_cls = type(fake_trt.Builder(None).create_builder_config())

    # The builder hands back no cache after a successful build: the engine stays, no cache file.
    monkeypatch.setattr(config_cls, "get_timing_cache", lambda self: None)
    info = ttrt.build_engine(onnx_path, engine, max_batch=4, timing_cache=cache)
    assert engine.read_bytes() == b"ENGINE" and not cache.exists() and info["timing_cache"] is None
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    # A cache file from another TensorRT / GPU is rejected: deleted, the build starts from an empty cache.
    cache.write_bytes(b"stale")
    create = config_cls.create_timing_cache

    def picky_create(self, data):
        if bytes(data) == b"stale":
            raise RuntimeError("timing cache version mismatch")
        return create(self, data)

    monkeypatch.setattr(config_cls, "create_timing_cache", picky_create)
    engine.unlink()
    info = ttrt.build_engine(onnx_path, engine, max_batch=4, timing_cache=cache)
    assert engine.read_bytes() == b"ENGINE" and info["timing_cache_reused"] is False
    assert cache.read_bytes() == b"timing:"  # replaced by the fresh build's cache
    # set_timing_cache answering False (TensorRT's "rejected") is handled the same way.
    cache.write_bytes(b"other")
    monkeypatch.setattr(config_cls, "set_timing_cache",
                        lambda self, c, ignore: False if c.data == b"other" else setattr(self, "cache", c))
    info = ttrt.build_engine(onnx_path, engine, max_batch=4, timing_cache=cache)
    assert info["timing_cache_reused"] is False and cache.read_bytes() == b"timing:"
