"""The process that holds one publishing connection, so that a server that never reads holds up nothing else.

FFmpeg's network muxers block inside calls PyAV makes while holding the GIL (the RTMP handshake in
``avio_open``, RTSP's ANNOUNCE/SETUP/RECORD in ``avformat_write_header``), and PyAV sets no interrupt
callback or ``rw_timeout`` on output containers: in the run's own process, a receiver that accepts and
never answers froze every thread. Here it freezes only this process, which the
:class:`~streamseg.outputs.publish.Publisher` watches and kills.

Run as ``python -m streamseg.outputs.publish_process`` (started by the publisher, in its own session so a
terminal's Ctrl-C reaches only the run, and killed by the kernel if the thread that started it ends).
stdin: one JSON line of settings (the target, which may hold a stream key, never goes on a command
line), then frames, each a :data:`HEADER` and ``height * width * 3`` RGB bytes; the end of stdin ends the
stream (encoder flushed, trailer written). stdout: one JSON line per event: ``{"ready": true}`` once
imported, ``{"sent": N, "bytes": B}``
after each frame is encoded and muxed, ``{"warning": TEXT}``, and ``{"error": "protocol"|"failed",
"message": TEXT}`` before it exits 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import sys
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from streamseg.errors import redact, short_message

from .audio import COPYABLE_IN_STREAMS, AudioCopy
from .video import add_h264_stream, encoder_options, rgb_frame

HEADER = struct.Struct("<4sdII")  # b"FRM1", seconds on the published timeline, height, width
MAGIC = b"FRM1"
PARENT_ENV = "STREAMSEG_PUBLISH_PARENT"  # the run's pid: the process ends when the run is gone


class Connection:
    """One open output container and its H.264 stream (and the source file's audio, copied along)."""

    def __init__(self, settings: dict, image: np.ndarray, seconds: float, say) -> None:
        self.container = av.open(settings["target"], mode="w", format=settings["format"],
                                 options=dict(settings["options"]), container_options=dict(settings["container_options"]))
        try:
            height, width = image.shape[:2]
            fps = settings["fps"]
            options = encoder_options("libx264", crf=23, preset="veryfast", threads=0, live=True)
            # keyframes are forced by time (see send): a live source's drops make frames sparser than fps says, and
            # a count of frames would stretch HLS segments and the wait of a viewer joining; x264's own limit only
            # backs that up, and it adds none at scene cuts
            options["g"] = str(max(1, int(round(settings["keyframe_seconds"] * fps * 4))))
            options["x264-params"] = "scenecut=0"
            self.stream = add_h264_stream(self.container, "libx264", width=width, height=height, fps=fps,
                                          time_base=Fraction(1, 1000), options=options)
            self.audio: AudioCopy | None = None
            if settings.get("audio_from"):
                try:
                    self.audio = AudioCopy(settings["audio_from"], self.container, copyable=COPYABLE_IN_STREAMS)
                    self.audio.skip_until(seconds)  # a reconnect mid-file goes on from here
                except (av.FFmpegError, IndexError, ValueError) as exc:
                    say(warning=f"audio of {settings['audio_from']} not published: {short_message(exc)}")
        except Exception:
            self.container.close()
            raise
        self.fps = fps
        self._keyframe_ms = settings["keyframe_seconds"] * 1000
        self._key_at: int | None = None  # pts (ms) of the last keyframe
        self._last = -1
        self.sent = 0
        self.bytes = 0

    def send(self, image: np.ndarray, seconds: float) -> None:
        pts = max(self._last + 1, int(round(seconds * 1000)))
        self._last = pts
        if self.audio is not None:
            self.audio.copy_until(seconds)
        vf = rgb_frame(image)
        vf.pts, vf.time_base = pts, Fraction(1, 1000)
        if self._key_at is None or pts - self._key_at >= self._keyframe_ms - 0.5 * 1000 / self.fps:
            vf.pict_type = av.video.frame.PictureType.I  # an HLS segment, or a joining viewer, starts here
            self._key_at = pts
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
            self.bytes += packet.size
        self.sent += 1

    def close(self) -> None:
        """Flush the encoder, write the trailer and close; the first error is raised after everything is closed."""
        error: BaseException | None = None
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            if self.audio is not None:
                self.audio.copy_until(self._last / 1000 + 1 / self.fps)
        except (av.FFmpegError, OSError) as exc:
            error = exc
        for closing in ([self.audio] if self.audio is not None else []) + [self.container]:
            try:
                closing.close()
            except (av.FFmpegError, OSError) as exc:
                error = error or exc
        if error is not None:
            raise error


def _read(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes, or None at the end of the input (a frame cut short by it is not sent)."""
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    """The kernel kills this process when the thread that started it ends (Linux), e.g. the run killed with -9."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.environ.get(PARENT_ENV) and os.getppid() != int(os.environ[PARENT_ENV]):
        os._exit(1)  # the run ended before the line above took effect


def main() -> int:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def say(**event) -> None:
        try:
            out.write(json.dumps(event).encode() + b"\n")
            out.flush()
        except OSError:  # the run went away
            os._exit(1)

    say(ready=True)  # imported: the run's first frames may come
    connection: Connection | None = None
    try:
        settings = json.loads(inp.readline())
        while (head := _read(inp, HEADER.size)) is not None:
            magic, seconds, height, width = HEADER.unpack(head)
            if magic != MAGIC:
                raise ValueError("the frames on stdin are out of step")
            data = _read(inp, height * width * 3)
            if data is None:
                break
            image = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            if connection is None:
                connection = Connection(settings, image, seconds, say)
            connection.send(image, seconds)
            say(sent=connection.sent, bytes=connection.bytes)
        if connection is not None:
            connection, closing = None, connection
            closing.close()
        return 0
    except av.error.ProtocolNotFoundError as exc:
        say(error="protocol", message=short_message(exc))
    except BrokenPipeError:  # the run went away
        pass
    except Exception as exc:  # noqa: BLE001 - reported to the run, which decides: reconnect or give up
        say(error="failed", message=redact(short_message(exc)))
    finally:
        if connection is not None:
            try:
                connection.container.close()
            except (av.FFmpegError, OSError):
                pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
