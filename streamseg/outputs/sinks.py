"""Sinks that hold no file of their own: nowhere (a run that only reports), and several sinks at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamseg.closing import close_all
from streamseg.frames import Frame
from streamseg.roles import Sink, SinkBase


class NullSink(SinkBase):
    """Discards frames (a headless run that only reports)."""

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        self.frames_written += 1

    def close(self) -> None:
        pass


class TeeSink(SinkBase):
    """Writes every frame to several sinks; closes them all, even when one fails to close."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def write(self, frame: Frame) -> None:
        for s in self.sinks:
            s.write(frame)

    def finish(self) -> None:
        for s in self.sinks:
            s.finish()

    @property
    def written(self) -> list[Path]:
        return [path for s in self.sinks for path in s.written]

    @property
    def bytes_written(self) -> int:
        return sum(s.bytes_written for s in self.sinks)

    @property
    def publish_reconnects(self) -> int:
        return sum(s.publish_reconnects for s in self.sinks)

    @property
    def publish_failures(self) -> int:
        return sum(s.publish_failures for s in self.sinks)

    def close(self) -> None:
        close_all(self.sinks)
