"""Shared fixtures: real media made with PyAV, real models with random weights built from real configs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

# The Hub is unreachable from CI: fail fast instead of retrying for 25 s (read at import by huggingface_hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# isort: off
import streamseg  # noqa: E402,F401  (loads OpenCV before PyAV: see streamseg/__init__.py)
import av  # noqa: E402
# isort: on

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from streamseg.testing.models import (  # noqa: E402
    save_tiny_clipseg,
    save_tiny_detr_panoptic,
    save_tiny_mask2former,
    save_tiny_oneformer,
    save_tiny_sam2,
    save_tiny_segformer,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = ROOT / "sample_media" / "street.mp4"
SAMPLE_IMAGE = ROOT / "sample_media" / "street.jpg"
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"


def pytest_collection_modifyitems(config, items):
    """The Ray tests (one test worker runs them all, on one cluster: the longest share) are handed out first.
    Tests marked ``cuda`` run where a CUDA device is (``pytest -m cuda`` on a GPU machine), and skip elsewhere."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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
    from streamseg.testing.scenes import StreetScene

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


def run_cli(*args: str, timeout: float = 120, env: dict | None = None,
            subprocess_only: bool = False) -> subprocess.CompletedProcess:
    """``streamseg ARGS`` offline, as a user would run it: its exit code, stdout and stderr.

    In this process (``cli.main``, with stdout, stderr and logging captured), which saves an interpreter
    start and the imports per call; in a subprocess (``python -m streamseg``) when the test sets
    environment variables or needs a process of its own (``subprocess_only``: signals, Ray drivers, windows).
    """
    if env or subprocess_only:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "streamseg", *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=ROOT)
    import io
    import logging

    from streamseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []  # so that the CLI's logging set-up writes to the captured stderr, as in its own process
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(cwd)
        root.handlers, root.level = saved
    return subprocess.CompletedProcess(["streamseg", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def cli_process(*args: str, **popen_kwargs):
    """``python -m streamseg ARGS`` running in the background (stderr piped, text); killed on exit if still running."""
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT, **popen_kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_size(path: Path, size: int, timeout: float = 60) -> bool:
    """Wait until ``path`` holds at least ``size`` bytes; whether it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < size):
        time.sleep(0.05)
    return path.exists() and path.stat().st_size >= size


def has_xvfb() -> bool:
    return shutil.which("Xvfb") is not None


@pytest.fixture(scope="session")
def tiny_mask2former(tmp_path_factory) -> Path:
    return save_tiny_mask2former(tmp_path_factory.mktemp("tiny-mask2former"))


@pytest.fixture(scope="session")
def tiny_detr(tmp_path_factory) -> Path:
    return save_tiny_detr_panoptic(tmp_path_factory.mktemp("tiny-detr"))


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> Path:
    return save_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"))


@pytest.fixture(scope="session")
def tiny_clipseg(tmp_path_factory) -> Path:
    return save_tiny_clipseg(tmp_path_factory.mktemp("tiny-clipseg"))


@pytest.fixture(scope="session")
def tiny_oneformer(tmp_path_factory) -> Path:
    return save_tiny_oneformer(tmp_path_factory.mktemp("tiny-oneformer"))


class StreamServer:
    """ffmpeg as a live TCP MPEG-TS server on a free port, sending the sample clip in real time, looped.

    A context manager; ``stop()`` and ``start()`` take it away and bring it back on the same address.
    """

    def __init__(self, *, realtime: bool = True) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.realtime = realtime  # False: as fast as the reader takes it (many frames in little time)
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(["ffmpeg", "-loglevel", "error", *(["-re"] if self.realtime else []),
                                       "-stream_loop", "-1", "-i", str(SAMPLE_CLIP), "-an", "-c", "copy", "-f",
                                       "mpegts", f"{self.url}?listen=1"], stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> StreamServer:
        self.start()
        time.sleep(0.5)  # listening before a client connects
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


RAY_CLI = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One local Ray cluster on loopback (``ray start --head``, 2 CPUs) for the whole session; drivers join it
    with ``--ray ADDRESS`` in subprocesses, as users do."""
    pytest.importorskip("ray")
    with contextlib.suppress(OSError):  # the Ray tests are the suite's longest share: ahead of the rest for the CPU
        os.nice(-5)  # this test worker, the cluster and the drivers it starts (root only; else as it is)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A throw-away loopback cluster: no token (drivers are this test's subprocesses, which inherit the setting).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    subprocess.run([RAY_CLI, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                    "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY_CLI, "stop", "--force"], capture_output=True, timeout=60)
