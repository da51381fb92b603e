"""A publisher whose server accepts the connection and never reads holds up nothing else (issue 24).

FFmpeg blocks in the RTMP handshake and the RTSP announce holding the GIL, and in a TCP write once
the server's buffers are full: each connection lives in a process of its own that is killed when it
makes no progress, then reconnected with the backoff and counted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_CLIP, cli_process, decode, run_cli

from streamseg.frames import Frame
from streamseg.outputs.publish import Publisher
from streamseg.testing.streams import SyntheticStreams


class SilentServer:
    """Accepts every connection on a loopback port, keeps it open and never reads a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def url(self, scheme: str) -> str:
        return {"rtmp": f"rtmp://127.0.0.1:{self.port}/live/secret-key", "rtsp": f"rtsp://127.0.0.1:{self.port}/live",
                "tcp": f"tcp://127.0.0.1:{self.port}"}[scheme]

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


def _senders() -> list[int]:
    """This process's publishing child processes still running."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and b"publish_process" in (proc / "cmdline").read_bytes()
                    and (proc / "stat").read_text().split(") ", 1)[1].split()[:2][1] == str(os.getpid())):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp", "tcp"])
def test_a_server_that_never_reads_holds_up_nothing_and_is_reconnected(scheme):
    server = SilentServer()
    publisher = Publisher(server.url(scheme), fps=25, connect_timeout=1.0, stall_timeout=1.0, reconnect_max_delay=0.5)
    rng = np.random.default_rng(0)
    ticks, stop = [], threading.Event()

    def tick() -> None:  # a thread of the run that must keep running (the GIL is never held for long)
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        for i in range(125):  # 5 s of noisy 480p frames at 25 fps: megabytes, more than loopback buffers hold
            t0 = time.monotonic()
            publisher.write(Frame(index=i, image=rng.integers(0, 256, (480, 640, 3), np.uint8), pts=i,
                                  time_base=Fraction(1, 25)))
            assert time.monotonic() - t0 < 0.1
            time.sleep(0.04)
        t0 = time.monotonic()
        publisher.close()
        closing = time.monotonic() - t0
    finally:
        stop.set()
        ticker.join()
        server.close()
    assert max(np.diff(ticks)) < 0.5, max(np.diff(ticks))
    assert closing < 4.0, closing
    assert publisher.failures >= 2 and len(server.connections) >= 2  # given up on, and reconnected
    assert publisher.frames_sent + publisher.dropped == 125
    if scheme == "tcp":  # it sent until the server's buffers filled, then stalled
        assert publisher.frames_sent > 0
    else:  # the handshake never finished
        assert publisher.frames_sent == 0 and not publisher.connected
    assert _senders() == []  # every child process is gone


def _get(port: int, path: str) -> bytes:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stop", ["duration", "sigint"])
def test_a_run_publishing_to_a_server_that_never_reads_records_serves_and_stops(stop, tiny_model, tmp_path):
    server, port, rec = SilentServer(), _free_port(), tmp_path / "rec.mp4"
    limit = ["--duration", "8"] if stop == "duration" else []
    with SyntheticStreams(1, fps=10) as cams, cli_process(
            cams.urls[0], "--model", str(tiny_model), "-o", str(rec), "-o", server.url("rtmp"), "--timeout", "2",
            "--serve", str(port), *limit) as proc:
        started = time.monotonic()
        while True:  # start-up: the model, the camera
            try:
                body = _get(port, "/healthz")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() - started < 60, "the live view never answered"
                time.sleep(0.2)
        answers, up = 0, time.monotonic()
        while time.monotonic() - up < 6:  # the live view answers all along, while the publisher hangs
            stats = json.loads(_get(port, "/stats"))
            answers += 1
            time.sleep(0.5)
            try:
                _get(port, "/healthz")
            except urllib.error.HTTPError as exc:  # an answer too (503 names a camera slow on busy cores)
                assert exc.code == 503, exc
        if stop == "sigint":
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            _, err = proc.communicate(timeout=30)
            assert time.monotonic() - t0 < 10  # the frames in flight, the recording closed, the publisher given up
        else:
            _, err = proc.communicate(timeout=30)
            assert time.monotonic() - up < 8 + 6  # 8 s of stream from about when it came up, and the stop
    server.close()
    assert proc.returncode == 0, err
    assert answers >= 10 and stats["sources"][0]["publish_failures"] >= 1  # it gave up on a connection at least once
    assert len(server.connections) >= 2  # and connected again
    assert "no answer from the server for 2 s" in err and "Traceback" not in err
    assert "secret-key" not in err  # the stream key is never shown
    frames, times = decode(rec)
    written = int(err.split("written ")[1].split(",")[0])
    # the recording went on all along (busy cores may drop some of the camera's 10 fps, counted)
    assert len(frames) == written >= 10 and times[-1] >= 5.0, (written, times[-1])


def test_a_file_published_to_a_server_that_never_reads_is_recorded_whole_and_ends(tiny_model, tmp_path):
    """A file's frames wait for the publisher (none is lost while it keeps up), for a second at most each."""
    server, rec, clip = SilentServer(), tmp_path / "rec.mp4", tmp_path / "long.mp4"
    # 12 s of video: long enough that frames still come after the first connection's 1 s and the 0.5 s backoff
    # (the tiny model runs 100 frames in under 2 s here, so the sample alone can end before a second try)
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "2", "-i", str(SAMPLE_CLIP), "-an", "-c", "copy",
                    str(clip)], check=True)
    started = time.monotonic()
    proc = run_cli(str(clip), "--model", str(tiny_model), "-o", str(rec), "-o", server.url("rtmp"),
                   "--timeout", "1")
    took = time.monotonic() - started
    server.close()
    assert proc.returncode == 0, proc.stderr
    assert len(decode(rec)[0]) == 300 and "written 300" in proc.stderr  # the recording is whole
    assert len(server.connections) >= 2 and "no answer from the server for 1 s" in proc.stderr
    assert took < 60, took
