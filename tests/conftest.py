"""Shared fixtures: real media made with PyAV, real models with random weights built from real configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

# The Hub is unreachable from CI: fail fast instead of retrying for 25 s (read at import by huggingface_hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamseg  # noqa: E402,F401  (loads OpenCV before PyAV: see streamseg/__init__.py)
import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = ROOT / "sample_media" / "street.mp4"
SAMPLE_IMAGE = ROOT / "sample_media" / "street.jpg"
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"


def save_tiny_segformer(folder: Path, *, num_labels: int = 5, size: int = 64, seed: int = 0) -> Path:
    """A real SegformerForSemanticSegmentation (random weights) saved the way users' models are."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil

    torch.manual_seed(seed)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=num_labels,
                             id2label={i: f"class{i}" for i in range(num_labels)},
                             label2id={f"class{i}": i for i in range(num_labels)})
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_segformer(tmp_path_factory.mktemp("tiny-segformer"))


@pytest.fixture(scope="session")
def demo_model() -> Path:
    assert (DEMO_MODEL / "config.json").is_file(), "run sample_media/train_demo_model.py"
    return DEMO_MODEL


def write_clip(path: Path, frames: list[np.ndarray], pts: list[int], time_base: Fraction,
               *, codec: str = "libx264", audio_seconds: float = 0.0) -> Path:
    """Encode RGB frames at the given timestamps (variable frame rate allowed), optionally with a tone."""
    with av.open(str(path), mode="w") as out:
        v = out.add_stream(codec, rate=25)
        v.width, v.height = frames[0].shape[1], frames[0].shape[0]
        v.pix_fmt = "yuv420p"
        v.time_base = time_base
        v.codec_context.time_base = time_base
        if audio_seconds:
            a = out.add_stream("aac", rate=16_000, layout="mono")
            n = int(audio_seconds * 16_000)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 16_000)).astype(np.float32)[None]
            for s in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, s:s + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 16_000, s, Fraction(1, 16_000)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
        for img, p in zip(frames, pts):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = p, time_base
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
    return path


def scene_frames(n: int, width: int = 160, height: int = 96, seed: int = 3) -> list[np.ndarray]:
    from streamseg.synthetic import StreetScene

    scene = StreetScene(seed, width, height)
    return [scene.render(float(i))[0] for i in range(n)]


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every video frame (RGB) of a file and its presentation time in seconds."""
    images, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            images.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    return images, times


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m streamseg ARGS`` in a subprocess, offline, as a user would run it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "streamseg", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


def has_xvfb() -> bool:
    return shutil.which("Xvfb") is not None
