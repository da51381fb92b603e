"""Live synthetic cameras: MPEG-TS over TCP of moving street scenes, served by PyAV, for tests, benchmarks and demos.

    with SyntheticStreams(4, fps=10) as streams:   # four cameras on free loopback ports
        streams.urls                                # ["tcp://127.0.0.1:40111", ...]
        streams.stop(0); streams.start(0)           # one camera goes away and comes back on its address

Each accepted connection gets its own H.264 encoder (a keyframe every second, starting at the
first frame) fed in real time from the scene's clock, so any number of readers may connect,
leave and come back, as they do with a real camera. ``python -m streamseg.testing.streams N``
serves N cameras until Ctrl-C (to try ``streamseg fleet`` without cameras).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from fractions import Fraction

from streamseg.closing import Closing

from .scenes import StreetScene

log = logging.getLogger(__name__)


class _Camera:
    def __init__(self, index: int, width: int, height: int, fps: float, host: str, port: int = 0) -> None:
        self.index, self.width, self.height, self.fps, self.host = index, width, height, fps, host
        self.port = port
        self.clients = 0  # connections served so far
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> None:
        self._stop.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(8)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, name=f"synthetic-camera{self.index}", daemon=True)
        thread.start()
        self._threads = [thread]

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.clients += 1
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"synthetic-camera{self.index}-client",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        import av

        scene = StreetScene(seed=100 + self.index, width=self.width, height=self.height)
        rate = Fraction(self.fps).limit_denominator(1000)
        try:
            with conn, conn.makefile("wb") as pipe, av.open(pipe, "w", format="mpegts") as out:
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
                stream.codec_context.time_base = 1 / rate
                stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, round(self.fps))),
                                  "threads": "1"}
                first = time.monotonic()
                n = 0
                while not self._stop.is_set():
                    due = first + n / self.fps
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    t = (time.monotonic() - self._started) * self.fps  # the scene runs on, whoever watches
                    image, _ = scene.render(t)
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts = n
                    frame.time_base = stream.codec_context.time_base
                    out.mux(stream.encode(frame))
                    pipe.flush()
                    n += 1
        except (OSError, ValueError, av.FFmpegError):  # the reader went away, or the camera was stopped
            pass


class SyntheticStreams(Closing):
    """``count`` live synthetic cameras on free ports of ``host``; ``urls`` lists them."""

    def __init__(self, count: int, *, width: int = 160, height: int = 96, fps: float = 10.0,
                 host: str = "127.0.0.1") -> None:
        self.cameras = [_Camera(i, width, height, fps, host) for i in range(count)]
        self._closed = False
        for camera in self.cameras:
            camera.start()

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.cameras]

    def stop(self, index: int) -> None:
        """Camera ``index`` goes away (its readers are cut off); :meth:`start` brings it back on the same address."""
        self.cameras[index].stop()

    def start(self, index: int) -> None:
        self.cameras[index].start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for camera in self.cameras:
                camera.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m streamseg.testing.streams",
                                     description="Serve live synthetic cameras (MPEG-TS over TCP) until Ctrl-C.")
    parser.add_argument("count", type=int, nargs="?", default=4)
    parser.add_argument("--size", default="320x180", help="WxH (default 320x180)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with SyntheticStreams(args.count, width=width, height=height, fps=args.fps, host=args.host) as streams:
        print("\n".join(streams.urls), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
