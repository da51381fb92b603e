"""Streams that change mid-way (issue 23): the picture's size, pixel format and frame rate switch, and the timestamps
jump back, as a camera's day/night switch or an encoder restart does. Every output keeps its first size (frames
letterboxed, one warning per change), timestamps stay increasing and evenly spaced, the changes are counted."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import cli_process, decode, run_cli

from streamseg.frames import Frame
from streamseg.pipeline.steady import SteadySize, letterbox

needs_ffmpeg = pytest.mark.skipif(subprocess.run(["which", "ffmpeg"], capture_output=True).returncode != 0,
                                  reason="the ffmpeg CLI makes the test streams")


def _changing_ts(folder: Path) -> Path:
    """320x240 yuv420p at 25 fps (2 s), 160x96 yuv444p at 15 fps (2 s), 320x240 again (2 s): three MPEG-TS
    files joined byte for byte, so each part's timestamps start again where the first did (a jump back)."""
    parts = []
    for k, (size, rate, fmt) in enumerate([("320x240", 25, "yuv420p"), ("160x96", 15, "yuv444p"),
                                           ("320x240", 25, "yuv420p")]):
        part = folder / f"part{k}.ts"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-t", "2",
                        "-pix_fmt", fmt, "-c:v", "libx264", "-g", "10", "-f", "mpegts", str(part)], check=True)
        parts.append(part.read_bytes())
    joined = folder / "changing.ts"
    joined.write_bytes(b"".join(parts))
    return joined


def test_letterbox_keeps_the_aspect_on_black_and_a_change_is_warned_once(caplog):
    image = np.full((96, 160, 3), 200, np.uint8)
    boxed = letterbox(image, (240, 320))
    assert boxed.shape == (240, 320, 3)
    assert (boxed[:24] == 0).all() and (boxed[-24:] == 0).all()  # 160x96 at x2 is 320x192: 24 rows above, below
    assert (boxed[24:-24] == 200).all()
    steady = SteadySize("cam")
    frames = [Frame(index=i, image=np.zeros(shape, np.uint8)) for i, shape in
              enumerate([(240, 320, 3)] * 3 + [(96, 160, 3)] * 5 + [(240, 320, 3)] * 2)]
    with caplog.at_level("WARNING"):
        out = [steady(f) for f in frames]
    assert {f.image.shape for f in out} == {(240, 320, 3)} and steady.changes == 2
    assert len([r for r in caplog.records if "cam: the picture" in r.getMessage()]) == 2


@needs_ffmpeg
def test_a_file_that_changes_size_rate_and_clock_keeps_every_frame_evenly_timed(tiny_model, tmp_path):
    clip = _changing_ts(tmp_path)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = run_cli(str(clip), "-o", str(out), "--json", str(jsonl), "--model", str(tiny_model), "--alpha", "0")
    err = proc.stderr
    assert proc.returncode == 0, err
    frames, times = decode(out)
    assert len(frames) == 50 + 30 + 50 and {f.shape for f in frames} == {(240, 320, 3)}  # every frame, one size
    steps = np.round(np.diff(times), 4)
    assert set(steps) <= {0.04, 0.0667}, sorted(set(steps))  # each part at its own rate, never back
    assert list(steps).count(0.0667) == 30  # the 15 fps part
    middle = frames[65]  # the 160x96 part, letterboxed: black bars above and below (--alpha 0 draws nothing)
    assert middle[:20].max() < 20 and middle[-20:].max() < 20 and middle[30:-30].max() > 100
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert np.allclose([r["pts"] for r in records], times, atol=0.002)
    assert "picture size changes 2, timestamp jumps 2" in err
    assert err.count("the picture changed to 160x96") == 1 and err.count("timestamps go back") == 2


class PacedServer:
    """Serves a file's bytes over TCP at ``seconds`` per copy, ``copies`` times, to each client: a camera whose
    stream changes mid-way (nothing re-times it on the way, as ffmpeg would)."""

    def __init__(self, data: bytes, seconds: float, copies: int) -> None:
        self.data, self.seconds, self.copies = data, seconds, copies
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        chunk = 188 * 40
        pause = self.seconds * chunk / len(self.data)
        try:
            for _ in range(self.copies):
                for start in range(0, len(self.data), chunk):
                    conn.sendall(self.data[start:start + chunk])
                    time.sleep(pause)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@needs_ffmpeg
def test_a_live_stream_that_changes_is_recorded_at_one_size_always_forward_and_counted(tiny_model, tmp_path):
    server = PacedServer(_changing_ts(tmp_path).read_bytes(), seconds=6.0, copies=2)
    out, jsonl = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = {}
    with cli_process(server.url, "-o", str(out), "--json", str(jsonl), "--model", str(tiny_model), "--no-display",
                     "--serve", str(port), "--reconnect", "0") as proc:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                rows = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2).read())["sources"]
                seen = rows[0] if rows else seen  # none yet while the run is starting
            except OSError:
                pass
            time.sleep(0.3)
        _, err = proc.communicate(timeout=60)
    server.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert seen["size_changes"] >= 3 and seen["time_jumps"] >= 3, seen  # counted in /stats as they happened
    frames, times = decode(out)
    assert len(frames) >= 30 and {f.shape for f in frames} == {(240, 320, 3)}
    assert all(b > a for a, b in zip(times, times[1:]))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert np.allclose([r["pts"] for r in records], times, atol=0.002)
    assert 9.0 <= times[-1] <= 13.0, times[-1]  # two copies of 6 s: as long as the stream ran, not squeezed
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


@needs_ffmpeg
def test_a_live_streams_audio_is_named_once_as_not_carried(tiny_model, tmp_path):
    from conftest import SAMPLE_CLIP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    server = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(SAMPLE_CLIP), "-c", "copy",
                               "-f", "mpegts", f"{url}?listen=1"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = tmp_path / "rec.mp4"
        proc = run_cli(url, "-o", str(out), "--model", str(tiny_model), "--duration", "3", "--no-display")
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("the stream's audio is not recorded or published") == 1, proc.stderr
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and not c.streams.audio
