"""--serve: the page, the MJPEG stream, /stats, the token, many viewers, and the CLI."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import cv2
import numpy as np
import pytest
from conftest import StreamServer, cli_process, scene_frames

from streamseg.errors import InputError
from streamseg.frames import Frame
from streamseg.pipeline.stats import Snapshot, SourceFigures
from streamseg.serve.server import PreviewServer, parse_address


def _get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, str, bytes]:
    try:
        with urlopen(Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _mjpeg_parts(url: str, n: int, timeout: float = 10) -> list[np.ndarray]:
    """The first ``n`` pictures of an MJPEG stream, decoded."""
    pictures = []
    with urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        while len(pictures) < n:
            assert r.readline() == b"--frame\r\n"
            headers = {}
            while (line := r.readline()) != b"\r\n":
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            body = r.read(int(headers["content-length"]))
            r.readline()
            pictures.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR),
                                         cv2.COLOR_BGR2RGB))
    return pictures


def test_addresses_default_to_localhost():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:80") == ("::1", 80)
    with pytest.raises(InputError, match="expected \\[HOST:\\]PORT"):
        parse_address("localhost:http")


def test_page_frames_stream_and_stats():
    frames = scene_frames(6, 160, 96)
    with PreviewServer("0", stats=lambda: Snapshot([SourceFigures(source="test", frames_written=3)])) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, ctype, page = _get(server.url)
        assert status == 200 and ctype.startswith("text/html") and b'src="stream.mjpg?source=0"' in page
        server.write(Frame(index=0, image=frames[0]))
        status, ctype, body = _get(server.url + "frame.jpg")
        assert status == 200 and ctype == "image/jpeg"
        picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert picture.shape == frames[0].shape
        error = np.abs(picture.astype(int) - frames[0]).mean()
        assert error < 10 < np.abs(picture.astype(int) - frames[0][::-1]).mean()  # this frame, through JPEG

        import threading

        def feed() -> None:
            for i in range(1, 6):
                time.sleep(0.2)
                server.write(Frame(index=i, image=frames[i]))

        threading.Thread(target=feed, daemon=True).start()
        pictures = _mjpeg_parts(server.url + "stream.mjpg", 3)
        assert len(pictures) == 3
        assert np.abs(pictures[0].astype(int) - pictures[2]).mean() > 1  # the picture moves

        status, ctype, body = _get(server.url + "stats")
        stats = json.loads(body)
        assert status == 200 and ctype == "application/json"
        assert [(s["source"], s["frames_written"]) for s in stats["sources"]] == [("test", 3)] and "viewers" in stats
        assert _get(server.url + "nope")[0] == 404


def test_other_hosts_need_a_token_and_every_request_carries_it():
    with PreviewServer("0.0.0.0:0") as made_up:  # none given: one is made up (the CLI prints it once)
        port = made_up.url.rsplit(":", 1)[1].strip("/")
        assert made_up.token_generated and len(made_up.token) >= 20
        assert _get(f"http://127.0.0.1:{port}/stats")[0] == 403
        assert _get(f"http://127.0.0.1:{port}/stats?token={made_up.token}")[0] == 200
    with PreviewServer("0.0.0.0:0", token="s3cret") as server:
        assert not server.token_generated
        port = server.url.rsplit(":", 1)[1].strip("/")
        base = f"http://127.0.0.1:{port}/"
        assert _get(base)[0] == 403
        assert _get(base + "stats?token=wrong")[0] == 403
        status, _, page = _get(base + "?token=s3cret")
        assert status == 200 and b"stream.mjpg?source=0&token=s3cret" in page  # the page's own requests carry it
        assert _get(base + "stats", headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_viewers_that_do_not_read_never_hold_up_the_writer():
    frame = Frame(index=0, image=scene_frames(1, 640, 360)[0])
    with PreviewServer("0") as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        stalled = []
        for _ in range(8):  # viewers that connect and never read a byte
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            stalled.append(s)
        deadline = time.monotonic() + 5
        while server.viewers < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.viewers == 8
        t0 = time.monotonic()
        for i in range(200):
            server.write(Frame(index=i, image=frame.image))
        assert server.frames_encoded == 200  # each frame encoded once, whatever the number of viewers
        assert time.monotonic() - t0 < 30  # a blocked viewer would block here forever, not slow it by a little
        pictures = _mjpeg_parts(server.url + "stream.mjpg", 1)  # a new viewer still gets frames
        server.write(frame)
        assert pictures[0].shape == (360, 640, 3)
        for s in stalled:
            s.close()


def _live_view_url(proc) -> str:
    """The URL the CLI logs for --serve 0 (any free port)."""
    line = proc.stderr.readline()
    while line and "live view:" not in line:
        line = proc.stderr.readline()
    return re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)


def test_cli_serves_the_run_and_stops_on_sigint(tiny_model, tmp_path):
    from fractions import Fraction

    from conftest import write_clip

    clip = write_clip(tmp_path / "long.mp4", scene_frames(20, 160, 96) * 40, list(range(800)), Fraction(1, 25))
    out = tmp_path / "out.mp4"
    with cli_process(str(clip), "-o", str(out), "--model", str(tiny_model), "--serve", "0", "-q",
                     "--batch-size", "1") as proc:
        url = _live_view_url(proc)
        pictures = _mjpeg_parts(url + "stream.mjpg", 2)
        assert pictures[0].shape == (96, 160, 3)
        stats = json.loads(_get(url + "stats")[2])
        (source,) = stats["sources"]
        assert source["source"] == str(clip) and source["frames_written"] > 0
        assert set(source) >= {"fps", "latency_ms", "frames_dropped", "reconnects"}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with pytest.raises(OSError):
        urlopen(url, timeout=2)  # the server is gone with the run


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None or shutil.which("ffmpeg") is None,
                    reason="needs Chromium and the ffmpeg CLI (apt-get install chromium ffmpeg)")
def test_the_page_shows_the_moving_picture_in_a_real_headless_chromium(tiny_model, tmp_path):
    shots = []
    # A live stream: the run lasts as long as the browser needs, however slowly it starts.
    with StreamServer() as server, cli_process(server.url, "--model", str(tiny_model), "--serve", "0", "--no-display",
                                               "-q") as proc:
        url = _live_view_url(proc)
        for k in range(2):
            shot = tmp_path / f"shot{k}.png"
            run = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                  f"--screenshot={shot}", "--window-size=400,300", "--virtual-time-budget=2000", url],
                                 capture_output=True, timeout=60, check=True, text=True)
            assert shot.exists(), f"no screenshot: {run.stderr[-2000:]}"
            shots.append(cv2.imread(str(shot)))
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    a, b = shots
    assert a.shape == (300, 400, 3)
    view = a[:225]  # the picture (640x360, scaled to the page's width) is at the top of the page
    assert view.std() > 20 and (view.max(axis=2) > 60).mean() > 0.5  # a picture, not a blank page
    assert np.abs(a[:225].astype(int) - b[:225]).mean() > 0.5  # and it moved between the two screenshots


def _raw(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
            if b"\r\n\r\n" in data and b"Content-Length: 0" in data:
                break
        return data


def _port(server: PreviewServer) -> int:
    return int(server.url.rsplit(":", 1)[1].strip("/"))


def test_only_requests_naming_this_server_are_answered():
    """DNS rebinding: a page on evil.example rebinds its name to 127.0.0.1; its requests carry Host: evil.example."""
    with PreviewServer("0", hosts=("cam.lan",)) as server:
        port = _port(server)
        for host, code in (("evil.example", 403), (f"evil.example:{port}", 403), (f"localhost:{port}", 200),
                           (f"127.0.0.1:{port}", 200), ("[::1]", 200), (f"cam.lan:{port}", 200), ("10.1.2.3", 403)):
            reply = _raw(port, f"GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            assert reply.startswith(f"HTTP/1.1 {code} ".encode()), (host, reply[:60])
    with PreviewServer("0.0.0.0:0", token="t") as anywhere:  # listening on every address: any IP literal is fine
        reply = _raw(_port(anywhere), b"GET /stats?token=t HTTP/1.1\r\nHost: 10.1.2.3\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ")


def test_a_malformed_request_is_400_without_a_traceback(capfd):
    with PreviewServer("0") as server:
        reply = _raw(_port(server), b"GET http://[/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert _get(server.url + "stats")[0] == 200  # and the server goes on
    assert "Traceback" not in capfd.readouterr().err


def test_connections_are_bounded_and_idle_ones_time_out():
    import threading

    before = threading.active_count()
    with PreviewServer("0", max_connections=8, idle_timeout=1.0) as server:
        idle = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(40)]  # they never send a byte
        time.sleep(0.5)
        assert threading.active_count() - before <= 8 + 1  # 8 connection threads and the server's own
        refused = 0
        for s in idle:
            s.settimeout(3)
            data = s.recv(1024)  # the server closes every one: refused at once, or after the idle timeout
            refused += data.startswith(b"HTTP/1.1 503")
        assert refused >= 40 - 8
        assert _get(server.url + "stats")[0] == 200  # the slots came back
        for s in idle:
            s.close()


def test_stats_never_show_a_password_and_the_token_is_printed_once_only_when_made_up(tiny_model, tmp_path):
    import functools
    import http.server
    import threading
    from fractions import Fraction

    from conftest import write_clip

    clip = write_clip(tmp_path / "clip.mp4", scene_frames(20, 160, 96) * 40, list(range(800)), Fraction(1, 25))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):  # /live: a stream (no file suffix), so it reconnects at its end and the
            return str(clip)  # run lasts until SIGINT however fast or slow this machine is

        def log_message(self, *args):
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://viewer:s3cretPW@127.0.0.1:{files.server_address[1]}/live"
    try:
        with cli_process(url, "--model", str(tiny_model), "--serve", "0.0.0.0:0", "--no-display", "-q", "-v",
                         "--batch-size", "1") as proc:
            line = proc.stderr.readline()
            while line and not line.startswith("streamseg: live view:"):
                line = proc.stderr.readline()
            token = re.search(r"\?token=([\w-]+)", line).group(1)  # made up, so shown, once
            port = re.search(r":(\d+)/", line).group(1)
            deadline = time.monotonic() + 30  # the page is served before the pipeline starts: wait for its source
            while '"sources": []' in (stats := _get(f"http://127.0.0.1:{port}/stats?token={token}")[2].decode()):
                assert time.monotonic() < deadline, stats
                time.sleep(0.1)
            assert "s3cretPW" not in stats and "viewer:***@127.0.0.1" in stats
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
    finally:
        files.shutdown()
        files.server_close()
    assert token not in err and "s3cretPW" not in err  # never again, in any later line

    with cli_process(str(clip), "--model", str(tiny_model), "--serve", "127.0.0.1:0", "--serve-token", "myT0ken",
                     "--no-display", "-q", "--debug", "--batch-size", "1") as proc:
        line = proc.stderr.readline()
        while line and not line.startswith("streamseg: live view:"):
            line = proc.stderr.readline()
        port = re.search(r":(\d+)/", line).group(1)
        assert _get(f"http://127.0.0.1:{port}/stats?token=myT0ken")[0] == 200  # its access log line holds the token
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "myT0ken" not in line + err  # chosen by the user: never printed, not even with --debug
