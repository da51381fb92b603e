"""The live window, on a real X server (Xvfb): frames reach the screen and the run ends cleanly."""

import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from conftest import SAMPLE_CLIP, decode, run_cli

from streamseg.cli import main
from streamseg.frames import Frame
from streamseg.outputs.window import WindowSink

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")


@pytest.fixture(scope="module")
def xvfb():
    """A private X server on a free display number (Xvfb picks it and writes it to a pipe)."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    proc.terminate()
    proc.wait(5)


def _screenshot(display: str, path) -> np.ndarray:
    """The whole X screen as RGB, read from ``xwd``'s 32-bit ZPixmap dump."""
    subprocess.run(["xwd", "-root", "-silent", "-display", display, "-out", str(path)], check=True)
    data = path.read_bytes()
    header = np.frombuffer(data[:100], ">u4")
    size, width, height, byte_order, bpp, stride, ncolors = (int(header[i]) for i in (0, 4, 5, 7, 11, 12, 19))
    step = bpp // 8
    start = size + ncolors * 12
    px = np.frombuffer(data[start:start + stride * height], np.uint8).reshape(height, stride)[:, :width * step]
    px = px.reshape(height, width, step)
    return px[..., [2, 1, 0]] if byte_order == 0 else px[..., [step - 3, step - 2, step - 1]]


def test_window_shows_the_annotated_frames(xvfb, monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", xvfb)
    sink = WindowSink("streamseg-test")
    img = np.zeros((120, 160, 3), np.uint8)
    img[..., 0] = 255  # pure red
    for i in range(5):
        sink.write(Frame(index=i, image=img))
    assert sink.frames_written == 5 and not sink.quit_requested
    if shutil.which("xwd"):
        # The X server paints the window when OpenCV's event loop runs (waitKey, once per write): on a busy
        # machine that can take longer than five frames, so keep showing the frame until it is painted.
        deadline = time.monotonic() + 30  # a loaded machine paints late
        while True:
            red = (_screenshot(xvfb, tmp_path / "shot.xwd") == [255, 0, 0]).all(-1).sum()
            if red > 0.9 * 120 * 160 or time.monotonic() > deadline:
                break
            sink.write(Frame(index=sink.frames_written, image=img))
        assert red > 0.9 * 120 * 160  # the red frame is on screen
    sink.close()
    sink.close()  # idempotent


def test_display_and_record_together(xvfb, tiny_model, tmp_path):
    # In a subprocess: OpenCV's Qt GUI binds to the first thread that uses it, and the test above
    # used this process's main thread, while the pipeline draws from its render thread.
    out = tmp_path / "out.mp4"
    proc = run_cli(str(SAMPLE_CLIP), "--display", "-o", str(out), "--model", str(tiny_model), "-q",
                   env={"DISPLAY": xvfb})
    assert proc.returncode == 0, proc.stderr
    assert len(decode(out)[0]) == 100


def test_no_display_is_a_clear_error(monkeypatch, tiny_model, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([str(SAMPLE_CLIP), "--model", str(tiny_model), "-q"]) == 2
    assert "no display available" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool (apt-get install xdotool)")
def test_q_in_the_window_stops_cleanly(xvfb, tiny_model, tmp_path):
    import sys
    import time
    from fractions import Fraction

    from conftest import ROOT, scene_frames, write_clip

    frames = scene_frames(20, 320, 180)
    clip = write_clip(tmp_path / "long.mp4", [frames[i % 20] for i in range(3000)], list(range(3000)), Fraction(1, 25))
    out = tmp_path / "rec.mp4"
    env = {**os.environ, "DISPLAY": xvfb, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", str(clip), "--display", "-o", str(out), "--model",
                             str(tiny_model), "-q"], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    window = ""
    deadline = time.monotonic() + 60
    while not window and time.monotonic() < deadline:
        time.sleep(0.2)
        window = subprocess.run(["xdotool", "search", "--name", "long.mp4"], capture_output=True, text=True,
                                env=env).stdout.split()
    assert window, "the window never appeared"
    subprocess.run(["xdotool", "windowfocus", "--sync", window[0]], env=env, check=True, timeout=10)
    subprocess.run(["xdotool", "key", "q"], env=env, check=True, timeout=10)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped early" in err
    written = int(err.split("written ")[1].split(",")[0])
    assert 0 < written < 3000 and len(decode(out)[0]) == written
