"""Sources that need more than a file path: http video files from servers with and without range requests."""

from __future__ import annotations

import functools
import http.server
import io
import re
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import decode

from streamseg.cli import main


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server plus ``Range: bytes=A-B`` (206 Partial Content), as real web servers answer."""

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # FFmpeg drops a download to seek elsewhere
            pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match:
            return super().send_head()
        path = self.translate_path(self.path)
        data = open(path, "rb").read()  # noqa: SIM115 - test files are small
        start, end = int(match[1]), int(match[2] or len(data) - 1)
        part = data[start:end + 1]
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        return io.BytesIO(part)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server as it is: it ignores ``Range`` and always sends the whole file."""

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def index_at_end(tmp_path_factory):
    """A 4 MB MP4 whose index (moov) is written after the frames, as encoders do without +faststart."""
    folder = tmp_path_factory.mktemp("http")
    rng = np.random.default_rng(0)
    with av.open(str(folder / "late.mp4"), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.codec_context.options = {"crf": "10"}
        for i in range(60):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    data = (folder / "late.mp4").read_bytes()
    assert data.index(b"moov") > data.index(b"mdat") and len(data) > 2_000_000
    return folder


def _serve(handler, folder):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("ranges", [True, False])
def test_an_http_mp4_with_its_index_at_the_end(ranges, index_at_end, tiny_model, tmp_path, capsys):
    server = _serve(RangeHandler if ranges else QuietHandler, index_at_end)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/late.mp4"
        rc = main([url, "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model), "-q", "--timeout", "5"])
    finally:
        server.shutdown()
        server.server_close()
    # (the test server itself complains on stderr when FFmpeg drops a download half way: not ours)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("streamseg")]
    if ranges:  # FFmpeg seeks back to the frames with a range request: every frame, as from a file
        assert rc == 0, err
        assert len(decode(tmp_path / "o.mp4")[0]) == 60
    else:  # not "corrupt": what happened, and what to do
        assert rc == 2 and err == [f"streamseg: error: cannot play {url} while downloading it: its index (moov) is "
                                   "at the end of the file and the server does not support range requests "
                                   "(seeking); download it first, or remux it with ffmpeg -i IN -c copy "
                                   "-movflags +faststart OUT"]
