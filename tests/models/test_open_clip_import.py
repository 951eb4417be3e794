"""open_clip imported without torchvision's package init (torch._dynamo) nor timm, for the cold start;
torchvision and timm still work afterwards, in full. Each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_a_classifier_loads_without_torchvision_dynamo_or_timm_and_torchvision_works_after():
    out = _run("""
        import sys
        from clip2point.models.classifier import load_classifier
        clf = load_classifier(labels="cube,cone", model="c2p-demo", device="cpu")
        print("LOADED", sorted(m for m in ("torchvision", "timm", "torch._dynamo") if m in sys.modules))
        import torchvision, torchvision.ops, torchvision.transforms
        import open_clip
        assert torchvision.ops.misc.FrozenBatchNorm2d.__name__ == "FrozenBatchNorm2d"
        assert callable(torchvision.ops.nms) and torchvision.transforms.Compose and torchvision.__version__
        assert open_clip.utils.FrozenBatchNorm2d.__name__ == "FrozenBatchNorm2d"
        tf = open_clip.image_transform(224, is_train=False)  # open_clip's own torchvision pieces
        print("LATER OK", type(tf).__name__)
    """)
    assert "LOADED []" in out and "LATER OK Compose" in out


def test_an_earlier_torchvision_import_is_left_alone():
    out = _run("""
        import sys, torchvision
        from clip2point.models.open_clip_import import import_open_clip
        open_clip = import_open_clip()
        assert open_clip.utils.FrozenBatchNorm2d is torchvision.ops.misc.FrozenBatchNorm2d
        print("SAME")
    """)
    assert "SAME" in out


def test_timm_towers_get_timm_when_their_model_asks():
    out = _run("""
        import sys
        from clip2point.models.open_clip_import import import_open_clip, require_timm
        open_clip = import_open_clip()
        assert "timm" not in sys.modules and open_clip.timm_model.timm is None
        require_timm(open_clip, "ViT-B-32")  # not a timm tower: nothing happens
        assert "timm" not in sys.modules
        timm_models = [m for m in open_clip.list_models()
                       if "timm_model_name" in (open_clip.get_model_config(m) or {}).get("vision_cfg", {})]
        require_timm(open_clip, timm_models[0])
        assert open_clip.timm_model.timm is sys.modules["timm"]
        print("TIMM", timm_models[0])
    """)
    assert "TIMM" in out
