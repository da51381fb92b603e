"""Publishing: annotated streams out over loopback to receivers written with PyAV, HLS playlists, reconnects."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import SAMPLE_CLIP, decode, run_cli, scene_frames, write_clip

from streamseg.frames import Frame
from streamseg.outputs.publish import Publisher, is_publish_target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(threading.Thread):
    """An MPEG-TS-over-TCP server made with PyAV: records each decoded frame's time and mean grey level."""

    def __init__(self, port: int, stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.stop_after = port, stop_after
        self.frames: list[tuple[float, float]] = []
        self.audio: list[str] = []  # the audio streams' codecs
        self.audio_seconds = 0.0  # the last audio packet's time
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            with av.open(f"tcp://127.0.0.1:{self.port}?listen=1", "r", format="mpegts", timeout=(30, 10)) as c:
                self.audio = [a.codec_context.name for a in c.streams.audio]
                for packet in c.demux():
                    if packet.stream.type == "audio" and packet.pts is not None:
                        self.audio_seconds = max(self.audio_seconds, float(packet.pts * packet.time_base))
                    if packet.stream.type != "video":
                        continue
                    for f in packet.decode():
                        self.frames.append((float(f.pts * f.time_base), float(f.to_ndarray(format="gray").mean())))
                    if self.stop_after and len(self.frames) >= self.stop_after:
                        return  # the receiver goes away mid-stream
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_targets_that_are_streams_and_the_rest():
    assert all(map(is_publish_target, ["rtmp://h/app/key", "rtsp://h:8554/x", "srt://h:9000", "udp://239.0.0.1:5000",
                                       "tcp://127.0.0.1:9", "out/stream.m3u8"]))
    assert not any(map(is_publish_target, ["out.mp4", "frames/", "a.png", "http://example.com/x.mp4"]))


def test_record_and_publish_at_once_every_frame_arrives(tiny_model, tmp_path):
    port = free_port()
    receiver = Receiver(port)
    time.sleep(0.3)
    rec = tmp_path / "rec.mp4"
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", str(rec), "-o", f"tcp://127.0.0.1:{port}", "-q")
    assert proc.returncode == 0, proc.stderr
    receiver.join(timeout=30)
    assert receiver.error is None, receiver.error
    times = [t for t, _ in receiver.frames]
    assert len(times) == 100 and len(decode(rec)[0]) == 100  # a file source: nothing dropped on either output
    assert np.allclose(np.diff(times), 0.04, atol=0.002)  # the source's timing, from 0
    assert times[0] < 0.1 and abs(times[-1] - times[0] - 3.96) < 0.01
    assert receiver.audio == ["aac"] and receiver.audio_seconds > 3.5  # the clip's audio went along


_SERVER = """
import json, sys, av
url, fmt, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
times, audio = [], []
try:
    with av.open(url, "r", format=fmt, options=opts, timeout=(30, 3) if fmt == "mpegts" else None) as c:
        for packet in c.demux():
            if packet.stream.type == "audio" and packet.size:
                audio.append(packet.stream.codec_context.name)
            elif packet.stream.type == "video":
                times += [float(f.pts * f.time_base) for f in packet.decode() if f.pts is not None]
except (av.FFmpegError, OSError):
    pass  # the publisher closed the connection
print(json.dumps({"times": times, "audio": sorted(set(audio)), "audio_packets": len(audio)}), flush=True)
"""


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp", "udp"])
def test_rtmp_rtsp_and_udp_servers_receive_the_annotated_stream(tiny_model, scheme):
    """Servers made with PyAV in listen mode, in their own process (as a real server is)."""
    port = free_port()
    if scheme == "rtmp":
        url, fmt, opts = f"rtmp://127.0.0.1:{port}/live/key", "flv", {"listen": "1"}
    elif scheme == "udp":  # MPEG-TS datagrams; the receiver ends 3 s after the last one
        url, fmt, opts = f"udp://127.0.0.1:{port}", "mpegts", {"fifo_size": "1000000", "overrun_nonfatal": "1"}
    else:
        url, fmt, opts = f"rtsp://127.0.0.1:{port}/live", "rtsp", {"rtsp_flags": "listen", "listen_timeout": "60"}
    server = subprocess.Popen([sys.executable, "-c", _SERVER, url, fmt, json.dumps(opts)], stdout=subprocess.PIPE,
                              text=True)
    try:
        time.sleep(1.0)
        proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", url, "-q")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(server.communicate(timeout=30)[0])
    finally:
        server.kill()
    times = got["times"]
    # every frame, or all but the last few a server may not flush (UDP may lose a datagram of a burst)
    assert len(times) >= (80 if scheme == "udp" else 95), len(times)
    assert got["audio"] == ["aac"] and got["audio_packets"] > 100  # about 4 s of the clip's AAC
    assert all(b > a for a, b in zip(times, times[1:]))
    assert abs((times[-1] - times[0]) - 3.96) < 0.1 if len(times) == 100 else times[-1] - times[0] <= 4.0


def test_hls_playlist_rolls_and_its_segments_decode(tiny_model, tmp_path):
    frames = scene_frames(25, 160, 96) * 8  # 8 s at 25 fps
    clip = write_clip(tmp_path / "in.mp4", frames, list(range(len(frames))), Fraction(1, 25))
    folder = tmp_path / "hls"
    folder.mkdir()
    proc = run_cli(str(clip), "--model", str(tiny_model), "-o", str(folder / "stream.m3u8"), "--hls-time", "1",
                   "--hls-list-size", "3", "-q")
    assert proc.returncode == 0, proc.stderr
    playlist = (folder / "stream.m3u8").read_text().splitlines()
    assert playlist[0] == "#EXTM3U"
    listed = [line for line in playlist if line and not line.startswith("#")]
    assert len(listed) == 3  # the last three segments
    on_disk = sorted(p.name for p in folder.glob("*.ts"))
    assert set(listed) <= set(on_disk) and len(on_disk) <= 4  # older segments deleted
    for name in listed:
        got, _ = decode(folder / name)
        assert len(got) >= 20 and got[0].shape == (96, 160, 3)


def test_a_publisher_reconnects_when_its_receiver_comes_back_and_counts_what_it_dropped():
    port = free_port()
    first = Receiver(port, stop_after=25)
    time.sleep(0.3)
    publisher = Publisher(f"tcp://127.0.0.1:{port}", fps=25, reconnect_max_delay=0.5)
    second = None
    for i in range(250):  # 10 s of frames at 25 fps, never blocking
        image = np.full((96, 160, 3), 40 + (i // 50) * 40, np.uint8)
        t0 = time.monotonic()
        publisher.write(Frame(index=i, image=image, pts=i, time_base=Fraction(1, 25)))
        assert time.monotonic() - t0 < 0.05
        if i == 100:  # 4 s in: a new receiver on the same port
            first.join(timeout=5)
            second = Receiver(port)
        time.sleep(0.04)
    publisher.close()
    second.join(timeout=20)
    assert len(first.frames) == 25 and second.error is None
    assert len(second.frames) >= 60, len(second.frames)  # the stream came back
    assert second.frames[0][0] > first.frames[-1][0] + 1  # timestamps go on across the reconnect
    assert publisher.reconnects == 1 and publisher.dropped_while_down > 0
    assert publisher.frames_sent + publisher.dropped == 250


def test_a_server_that_never_answers_fails_the_run_with_one_line(tiny_model, tmp_path):
    port = free_port()  # nothing listens there
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", str(tmp_path / "rec.mp4"), "-o",
                   f"tcp://127.0.0.1:{port}", "--reconnect", "0")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("streamseg: error:")]
    assert len(errors) == 1 and f"cannot publish to tcp://127.0.0.1:{port}" in errors[0]
    assert "gave up after 0 reconnect attempts" in errors[0] and "Traceback" not in proc.stderr
    srt = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", "srt://127.0.0.1:9/x")
    if srt.returncode:  # PyAV's wheels have no SRT: one line that says so
        assert "has no 'srt' protocol" in srt.stderr and "Traceback" not in srt.stderr


def test_more_than_one_file_output_or_publishing_several_inputs_is_refused(tmp_path):
    two = run_cli(str(SAMPLE_CLIP), "-o", str(tmp_path / "a.mp4"), "-o", str(tmp_path / "b.mp4"))
    assert two.returncode == 2 and "one file or folder output at most" in two.stderr
    many = run_cli(str(SAMPLE_CLIP), str(SAMPLE_CLIP), "-o", "tcp://127.0.0.1:9")
    assert many.returncode == 2 and "publishing a stream takes one input" in many.stderr
    playlist = tmp_path / "in.m3u8"
    playlist.write_text("#EXTM3U\n")
    same = run_cli(str(playlist), "-o", str(playlist))
    assert same.returncode == 2 and "is an input" in same.stderr and playlist.read_text() == "#EXTM3U\n"


def test_hls_segments_listed_while_the_stream_goes_on_already_decode(tmp_path):
    publisher = Publisher(tmp_path / "live.m3u8", fps=25, hls_time=1, hls_list_size=3)
    checked = []
    try:
        for i in range(150):  # 6 s of frames in real time
            publisher.write(Frame(index=i, image=np.full((96, 160, 3), (i * 5) % 256, np.uint8), pts=i,
                                  time_base=Fraction(1, 25)))
            time.sleep(0.04)
            if i in (80, 130) and (tmp_path / "live.m3u8").exists():
                listed = [line for line in (tmp_path / "live.m3u8").read_text().splitlines()
                          if line and not line.startswith("#")]
                for name in listed:
                    got, _ = decode(tmp_path / name)
                    assert len(got) >= 20, name  # a whole second of frames, while the run goes on
                checked.append(len(listed))
    finally:
        publisher.close()
    assert checked and checked[-1] == 3 and publisher.dropped == 0


def test_hls_segments_last_the_hls_time_when_a_live_source_drops_frames(tmp_path):
    """A live source whose drops leave 10 of its 25 fps (irregularly): segments still last about --hls-time."""
    publisher = Publisher(tmp_path / "live.m3u8", fps=25, hls_time=2, hls_list_size=20)
    rng = np.random.default_rng(1)
    kept = np.sort(rng.choice(250, 100, replace=False))  # 10 s of a 25 fps camera, 100 frames left
    try:
        for n, i in enumerate(kept):
            image = np.full((96, 160, 3), 90, np.uint8)
            image[40:56, i % 140:i % 140 + 20] = 200  # a small square moving: no scene cut for x264 to key on
            publisher.write(Frame(index=n, image=image, pts=int(i) * 40, time_base=Fraction(1, 1000)))
            time.sleep(0.01)
    finally:
        publisher.close()
    lines = (tmp_path / "live.m3u8").read_text().splitlines()
    durations = [float(line.split(":")[1].rstrip(",")) for line in lines if line.startswith("#EXTINF")]
    assert len(durations) >= 4, lines
    # each full segment from one forced keyframe to the next: 2 s plus at most the gap to the next frame kept
    assert all(1.9 <= d <= 2.6 for d in durations[:-1]), durations


def _publish_for(publisher: Publisher, seconds: float, start: int = 0, during=None) -> int:
    """Frames in real time (25 fps) for ``seconds``; ``during(i)`` is called before each frame."""
    n = int(seconds * 25)
    for i in range(start, start + n):
        if during is not None:
            during(i)
        image = np.full((96, 160, 3), 90, np.uint8)
        image[40:56, i % 140:i % 140 + 20] = 200
        publisher.write(Frame(index=i, image=image, pts=i * 40, time_base=Fraction(1, 1000)))
        time.sleep(0.04)
    return start + n


def test_an_hls_folder_that_vanishes_is_reported_once_and_published_again_when_it_is_back(tmp_path, caplog):
    folder = tmp_path / "hls"
    folder.mkdir()
    publisher = Publisher(folder / "live.m3u8", fps=25, hls_time=1, hls_list_size=30)
    try:
        with caplog.at_level("WARNING", logger="streamseg"):
            i = _publish_for(publisher, 2.5)
            shutil.rmtree(folder)  # a cleanup job, an unmounted disk
            i = _publish_for(publisher, 2.0, i)
            assert not folder.exists()  # never made again behind the user's back (it may be a mount point)
            folder.mkdir()
            _publish_for(publisher, 3.0, i)
    finally:
        publisher.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is gone" in m for m in messages) == 1 and sum("can take segments again: publishing" in m for m in messages) == 1
    assert publisher.publish_failures >= 1 and publisher.dropped >= 25  # the frames while it was gone, counted
    listed = [line for line in (folder / "live.m3u8").read_text().splitlines() if line and not line.startswith("#")]
    assert listed and all(len(decode(folder / name)[0]) >= 10 for name in listed)  # published again, playable


def test_a_full_hls_disk_is_reported_once_and_publishing_resumes_when_there_is_room(tmp_path, caplog, monkeypatch):
    """The free space the folder's disk reports is what the publisher watches (FFmpeg's HLS muxer drops failed
    segment writes without a word): the disk is made to report full, then room again."""
    import streamseg.outputs.publish as publish

    free = {"bytes": 10**9}
    real = shutil.disk_usage
    monkeypatch.setattr(publish.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=free["bytes"]))
    folder = tmp_path / "hls"
    folder.mkdir()
    publisher = Publisher(folder / "live.m3u8", fps=25, hls_time=1, hls_list_size=30)
    try:
        with caplog.at_level("WARNING", logger="streamseg"):
            i = _publish_for(publisher, 2.5)
            free["bytes"] = 100 * 1024  # full
            deadline = time.monotonic() + 10
            while "no space left" not in caplog.text and time.monotonic() < deadline:  # noticed as frames go by
                i = _publish_for(publisher, 0.2, i)
            time.sleep(0.5)  # the connection it ended is gone
            segments = set(folder.glob("*.ts"))
            i = _publish_for(publisher, 2.5, i)
            assert set(folder.glob("*.ts")) <= segments  # nothing more written while full
            free["bytes"] = 300 * 1024  # a little room: not enough to start again (no flapping)
            i = _publish_for(publisher, 1.0, i)
            free["bytes"] = 10**9
            _publish_for(publisher, 3.0, i)
    finally:
        publisher.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no space left" in m for m in messages) == 1, messages
    assert sum("can take segments again: publishing" in m for m in messages) == 1
    assert len(set(folder.glob("*.ts")) - segments) >= 2  # published again once there was room
