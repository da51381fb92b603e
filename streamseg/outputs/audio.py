"""The source's audio into an output container: copied as it is where the container can hold it, else AAC."""

from __future__ import annotations

import av

# Audio codecs that an MP4/MOV/MKV file can carry as they are; others are re-encoded to AAC.
COPYABLE_IN_FILES = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})
# ... and that FLV (RTMP), MPEG-TS (SRT, UDP, TCP) and HLS streams can.
COPYABLE_IN_STREAMS = frozenset({"aac", "mp3"})


class AudioCopy:
    """Copies (or, when the container cannot hold it, re-encodes to AAC) the audio of ``src`` into ``out``.

    Packets are muxed up to the video time written so far, so a stopped run has
    audio as long as its video.
    """

    def __init__(self, src: str, out: av.container.OutputContainer, *,
                 copyable: frozenset[str] = COPYABLE_IN_FILES) -> None:
        self._in = av.open(src)
        try:
            in_stream = self._in.streams.audio[0]
            if in_stream.codec_context is None or not in_stream.time_base:
                raise ValueError("the audio stream has no usable codec parameters")
            self._tb = in_stream.time_base
            self._copy = in_stream.codec_context.name in copyable
            if self._copy:
                self._out_stream = out.add_stream_from_template(in_stream)
            else:
                self._out_stream = out.add_stream("aac", rate=in_stream.codec_context.sample_rate or 48_000)
                self._out_stream.layout = in_stream.codec_context.layout
            self._packets = self._in.demux(in_stream)
        except BaseException:
            self._in.close()
            raise
        self._out = out
        self._pending: av.Packet | None = None
        self._done = False

    def _next(self) -> av.Packet | None:
        """The next packet (the one put back first), or ``None`` at the end (then the encoder is flushed)."""
        packet, self._pending = self._pending, None
        if packet is None:
            try:
                packet = next(self._packets)
            except (StopIteration, av.FFmpegError):
                self._end()
        return packet

    def skip_until(self, seconds: float) -> None:
        """Leave out the audio before ``seconds`` (a publisher that reconnected mid-file goes on from there)."""
        while not self._done and (packet := self._next()) is not None:
            if packet.pts is not None and float(packet.pts * self._tb) >= seconds:
                self._pending = packet
                return

    def copy_until(self, seconds: float) -> None:
        """Mux the audio up to ``seconds`` of the file's time."""
        while not self._done and (packet := self._next()) is not None:
            if packet.dts is None and packet.size == 0:
                continue
            if packet.pts is not None and float(packet.pts * self._tb) > seconds:
                self._pending = packet
                return
            if self._copy:
                packet.stream = self._out_stream
                self._out.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    self._out.mux(self._out_stream.encode(frame))

    def _end(self) -> None:
        self._done = True
        if not self._copy:
            self._out.mux(self._out_stream.encode(None))

    def close(self) -> None:
        if not self._done:
            self._end()
        self._in.close()
