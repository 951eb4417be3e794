"""Test-wide settings: offline, Triton in interpreter mode on CPU, tiny open_clip models.

Both variables must be set before huggingface_hub / triton are imported, hence at module level.
`setdefault` lets benchmarks/gpu_check.sh run the same tests on a real GPU with TRITON_INTERPRET=0.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("C2P_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "c2p-test-cache"))

import pytest  # noqa: E402

TINY_MODEL = "c2p-tiny"


@pytest.fixture(scope="session")
def tiny_model_name() -> str:
    return TINY_MODEL
