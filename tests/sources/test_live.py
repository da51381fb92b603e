"""Live and headless: streams that come back, wall-clock timing, --duration, --segment-time, crash-safe recordings."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import socket
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import SAMPLE_CLIP, StreamServer, cli_process, decode, run_cli, wait_for_size

from streamseg.errors import SourceError
from streamseg.frames import Frame
from streamseg.sources.reconnect import ReconnectingSource

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI (apt-get install ffmpeg)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Burst:
    """A stand-in connection: ``n`` frames 40 ms apart (advancing the clock), then an end or an error."""

    live = True
    fps = 25.0

    def __init__(self, clock: FakeClock, n: int, fail: bool) -> None:
        self.clock, self.n, self.fail = clock, n, fail
        self.closed = False

    def __iter__(self):
        for i in range(self.n):
            self.clock.now += 0.04
            yield Frame(index=i, image=np.zeros((4, 4, 3), np.uint8), pts=i * 40, time_base=Fraction(1, 1000))
        if self.fail:
            raise SourceError("stream failed: test (connection reset)")

    def close(self) -> None:
        self.closed = True


def test_a_stream_that_fails_comes_back_with_wall_clock_timestamps_and_a_counted_gap():
    clock = FakeClock()
    plan = iter(["ok", "refused", "refused", "ok", "refused", "refused", "refused"])

    def opener():
        step = next(plan)
        if step == "refused":
            clock.now += 3.0  # each failed attempt (and its backoff) takes time
            raise SourceError("cannot open stream: test (Connection refused)")
        return Burst(clock, 10, fail=True)

    src = ReconnectingSource("tcp://test", attempts=3, first_delay=0.001, max_delay=0.002, opener=opener, clock=clock)
    frames = []
    with pytest.raises(SourceError, match=r"gave up after 3 reconnect attempts"):
        for f in src:
            frames.append(f)
    assert [f.index for f in frames] == list(range(20))  # nothing invented for the gap
    ms = [f.pts for f in frames]
    assert ms[:10] == [i * 40 for i in range(10)]
    gap = ms[10] - ms[9]
    assert 6000 <= gap <= 6100  # two refused attempts of 3 s: the recording keeps the wall-clock gap
    assert all(b - a == 40 for a, b in zip(ms[10:], ms[11:]))
    assert src.reconnects == 1 and src.gap_seconds == pytest.approx(6.0, abs=0.1)


def test_reconnect_0_ends_at_the_first_end_and_interrupt_ends_a_wait():
    clock = FakeClock()
    src = ReconnectingSource("tcp://test", attempts=0, opener=lambda: Burst(clock, 5, fail=False), clock=clock)
    assert len(list(src)) == 5 and src.reconnects == 0

    calls = []

    def opener():
        calls.append(1)
        if len(calls) > 1:
            raise SourceError("cannot open stream: refused")
        return Burst(clock, 2, fail=True)

    src = ReconnectingSource("tcp://test", attempts=None, first_delay=0.05, max_delay=60, opener=opener)
    threading.Timer(1.0, src.interrupt).start()
    t0 = time.monotonic()
    assert len(list(src)) == 2  # keeps trying (backoff grows toward 60 s) until interrupted
    assert time.monotonic() - t0 < 2.5 and len(calls) >= 3


class Scripted:
    """A stand-in connection: frames at the given stream times (ms), each read after the given wall-clock wait."""

    live = True
    fps = 25.0

    def __init__(self, clock: FakeClock, steps: list[tuple[int, float]]) -> None:
        self.clock, self.steps = clock, steps

    def __iter__(self):
        for i, (pts, wait) in enumerate(self.steps):
            self.clock.now += wait
            yield Frame(index=i, image=np.zeros((4, 4, 3), np.uint8), pts=pts, time_base=Fraction(1, 1000))

    def close(self) -> None:
        pass


def _times(steps):
    clock = FakeClock()
    src = ReconnectingSource("tcp://test", attempts=0, opener=lambda: Scripted(clock, steps), clock=clock)
    return [f.pts for f in src], src


def test_frames_that_arrive_in_a_burst_after_a_stall_keep_the_cameras_spacing():
    # frame 0, then the reader stalls 1.5 s (a model warming up), then the 40 frames the server buffered arrive
    # at once: no freeze after frame 0, no frames 1 ms apart
    ms, src = _times([(5000, 0.0)] + [(5000 + 40 * i, 1.5 if i == 1 else 0.001) for i in range(1, 41)]
                     + [(5000 + 40 * i, 0.04) for i in range(41, 60)])
    assert ms == [40 * i for i in range(60)] and src.jumps == 0


@pytest.mark.parametrize("jump_ms", [-4000, -95_443_717, 3_600_000], ids=["encoder-restart", "mpegts-wrap", "leap"])
def test_a_stream_whose_timestamps_jump_goes_on_evenly_and_always_forward(jump_ms):
    # 10 frames, then the stream's clock jumps (back to an earlier time, the 2^33/90 kHz wrap, an hour ahead)
    # while the wall clock moves on 40 ms a frame
    base = 100_000_000
    steps = [(base + 40 * i, 0.04) for i in range(10)] + [(base + jump_ms + 40 * i, 0.04) for i in range(10, 20)]
    ms, src = _times(steps)
    assert src.jumps == 1
    assert all(b > a for a, b in zip(ms, ms[1:]))
    assert np.diff(ms).tolist() == [40] * 19  # placed by the wall clock, which moved 40 ms


def decode_until_damage(path) -> tuple[list[np.ndarray], list[float]]:
    """Frames a player shows from a recording cut short: everything before the cut (a partial last fragment)."""
    images, times = [], []
    with av.open(str(path)) as c:
        try:
            for f in c.decode(c.streams.video[0]):
                images.append(f.to_ndarray(format="rgb24"))
                times.append(float(f.pts * f.time_base))
        except av.error.InvalidDataError:
            pass
    return images, times


@needs_ffmpeg
def test_a_stream_server_killed_and_restarted_is_reconnected_into_the_same_playable_file(tiny_model, tmp_path):
    out = tmp_path / "rec.mp4"
    with StreamServer() as server, cli_process(server.url, "-o", str(out), "--model", str(tiny_model),
                                               "--no-display", "--reconnect-max-delay", "1", "--duration", "14") as proc:
        assert wait_for_size(out, 5_000), "streamseg wrote nothing"
        time.sleep(2.0)
        server.stop()  # the camera goes away...
        time.sleep(2.5)
        server.start()  # ...and comes back on the same address
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "reconnects 1 (" in err, err
    written = int(err.split("written ")[1].split(",")[0])
    frames, times = decode(out)
    assert len(frames) == written
    assert times[0] == 0.0
    gaps = np.diff(times)
    assert gaps.max() >= 1.0  # the 2.5 s outage is a gap in time (frames are 40 ms apart), not invented frames
    # frames on both sides of it (busy cores drop some of the 25 fps, counted, so no exact count)
    outage = int(gaps.argmax())
    assert outage + 1 >= 10 and len(frames) - outage - 1 >= 10, (outage, len(frames))
    # --duration 14 of wall-clock time from the first frame read, outage included; before it, what the stream sent
    # while the run was getting ready (the probe; a first OpenVINO conversion: seconds on busy cores) is read in a
    # burst, at the stream's own times
    assert 12.0 <= times[-1] <= 14.0 + 8.0, times[-1]


@needs_ffmpeg
@pytest.mark.parametrize("seconds, realtime", [(3.0, True), (8.0, True), (20.0, False)],
                         ids=["first-fragment", "several-fragments", "long-fast-feed"])
def test_a_recording_killed_at_any_point_plays_all_but_the_fragment_in_progress(seconds, realtime, tiny_model,
                                                                                   tmp_path):
    """kill -9 loses at most the fragment being written (2 s): every earlier frame decodes. The last case feeds
    frames as fast as they are segmented (no frame dropped), so the recording and its JSON hold thousands of
    frames and megabytes, as minutes of a real camera would."""
    out, jsonl = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    with StreamServer(realtime=realtime) as server, \
            cli_process(server.url, "-o", str(out), "--json", str(jsonl), "--model", str(tiny_model), "--no-display",
                        "-q", *([] if realtime else ["--drop-policy", "wait"])) as proc:
        assert wait_for_size(jsonl, 1), "streamseg wrote nothing"
        time.sleep(seconds)
        proc.send_signal(signal.SIGKILL)  # no chance to finalise anything
        proc.wait(timeout=10)
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.endswith("}")]
    frames, times = decode_until_damage(out)
    # The fragment in progress starts at the last keyframe: one is forced every 2 s of recording time.
    keys, key_at = [], None
    for k, r in enumerate(records):
        if key_at is None or r["pts"] - key_at >= 2.0 - 1e-6:
            keys.append(k)
            key_at = r["pts"]
    in_progress = keys[-1]  # frames before it are in closed fragments, which must all be on disk
    if len(keys) > 1 and in_progress >= len(records) - 3:
        # killed as a fragment closed: a frame's JSON line can be out before the encoder's buffer has handed its
        # keyframe to the muxer, so the fragment ending there may still be the one in progress
        in_progress = keys[-2]
    assert times and times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))
    assert in_progress - 1 <= len(frames) <= len(records), (len(frames), in_progress, len(records), len(keys))
    assert times[-1] == pytest.approx(records[len(frames) - 1]["pts"] - records[0]["pts"], abs=0.002)
    if not realtime:  # minutes of a camera's frames, in seconds
        assert len(records) > 300 and len(keys) >= 5 and out.stat().st_size > 500_000, (len(records), len(keys))


@needs_ffmpeg
def test_hitting_the_file_size_limit_is_one_line_and_keeps_what_was_written(tiny_model, tmp_path):
    out = tmp_path / "rec.mp4"
    limit = 400_000

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with StreamServer() as server, cli_process(server.url, "-o", str(out), "--model", str(tiny_model), "--no-display",
                                               "-q", "--duration", "60", preexec_fn=limit_file_size) as proc:
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert re.match(r"streamseg: error: cannot (write|finish) .*rec.mp4: .*File too large", lines[-1]), err
    frames, times = decode_until_damage(out)
    assert len(frames) >= 25 and out.stat().st_size <= limit


def test_duration_on_a_file_takes_that_much_of_it(tiny_model, tmp_path):
    out = tmp_path / "two.mp4"
    proc = run_cli(str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_model), "--duration", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    frames, times = decode(out)
    assert len(frames) == 50 and times[-1] == pytest.approx(49 / 25)


def test_segment_time_rotates_playable_files_that_each_start_at_zero(tiny_model, tmp_path):
    out = tmp_path / "rec.mp4"
    proc = run_cli(str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_model), "--segment-time", "1.5", "-q")
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("rec-*.mp4"))
    assert [f.name for f in files] == ["rec-000.mp4", "rec-001.mp4", "rec-002.mp4"]
    assert not out.exists()
    counts = []
    for f in files:
        frames, times = decode(f)
        counts.append(len(frames))
        assert times[0] == 0.0 and times == pytest.approx([i / 25 for i in range(len(frames))])
    assert counts == [38, 37, 25]  # 0-1.48 s, 1.52-2.96 s, 3.00-3.96 s: every frame once
    assert "wrote 3 files" in proc.stderr


def test_segment_names_can_be_a_strftime_pattern(tiny_model, tmp_path):
    proc = run_cli(str(SAMPLE_CLIP), "-o", str(tmp_path / "cam-%Y%m%d-%H%M%S.mp4"), "--model", str(tiny_model),
                   "--segment-time", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("cam-*.mp4"))
    assert len(files) == 2 and all(f.name[4:12].isdigit() for f in files)  # same second: made unique
    assert sum(len(decode(f)[0]) for f in files) == 100


@pytest.mark.parametrize("args,message", [
    (["--segment-time", "0"], "invalid time '0'"),
    (["--duration", "soon"], "invalid time 'soon'"),
    (["--reconnect", "-1"], "invalid --reconnect -1"),
])
def test_bad_live_options_are_one_line(tiny_model, args, message, tmp_path):
    proc = run_cli(str(SAMPLE_CLIP), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_segment_time_needs_an_output(tiny_model):
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "--segment-time", "5", "--no-display")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "streamseg: error: --segment-time needs -o OUTPUT.mp4"


@needs_ffmpeg
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)])
def test_a_signalled_live_recording_closes_every_file_and_export(signals, tiny_model, tmp_path):
    """A second signal may land while the first stop is under way or after it: exit 0 and closed files either way."""
    out, jsonl = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    with StreamServer() as server, cli_process(server.url, "-o", str(out), "--json", str(jsonl), "--model",
                                               str(tiny_model), "--no-display", "-q", "--batch-size", "1") as proc:
        assert wait_for_size(out, 5_000), "streamseg wrote nothing"
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped early" in err
    written = int(err.split("written ")[1].split(",")[0])
    frames, times = decode(out)  # strict: the file was closed properly, no damaged tail
    assert len(frames) == written > 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == written and [r["frame"] for r in records] == sorted(r["frame"] for r in records)


@needs_ffmpeg
def test_a_live_recording_in_segments_each_playable_as_soon_as_it_is_closed(tiny_model, tmp_path):
    with StreamServer() as server, cli_process(server.url, "-o", str(tmp_path / "rec.mp4"), "--model", str(tiny_model),
                                               "--no-display", "-q", "--segment-time", "2", "--duration", "7") as proc:
        wait_for_size(tmp_path / "rec-001.mp4", 0)  # the second segment has begun
        assert proc.poll() is None  # still recording...
        frames, times = decode(tmp_path / "rec-000.mp4")  # ...and the first segment already plays, whole
        assert frames and times[0] == 0.0 and times[-1] < 2.0  # how many were written depends on the load
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    files = sorted(tmp_path.glob("rec-*.mp4"))
    # 7 s of wall clock from the first frame read, and before it what the stream sent while the run got ready
    # (its probe: a second or two on busy cores), at the stream's own times: 4 segments of 2 s, or 5
    assert [f.name for f in files] == [f"rec-{k:03d}.mp4" for k in range(len(files))] and 4 <= len(files) <= 5
    for f in files:
        frames, times = decode(f)
        assert frames and times[0] == 0.0 and times[-1] < 2.0  # each starts at 0 and spans < 2 s


def test_segment_files_are_listed_also_when_the_output_is_shared_with_a_live_view(tiny_model, tmp_path):
    proc = run_cli(str(SAMPLE_CLIP), "-o", str(tmp_path / "rec.mp4"), "--model", str(tiny_model),
                   "--segment-time", "1.5", "--serve", "0", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 files: " in proc.stderr and str(tmp_path / "rec-002.mp4") in proc.stderr


def test_several_live_sources_one_goes_down_and_comes_back_while_the_others_record_and_serve(tiny_model, tmp_path):
    """A single run with two cameras and --serve: the one that goes away is retried (it worked before) and shown
    as reconnecting in /stats and /healthz while the other keeps recording; then it records again."""
    import urllib.error
    import urllib.request

    from streamseg.testing.streams import SyntheticStreams

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def stats():
        return {x["source"]: x for x in json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/stats", timeout=5).read())["sources"]}

    def wait(condition, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if found := condition():
                    return found
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    out = tmp_path / "out"
    with SyntheticStreams(2, fps=10) as cams, cli_process(
            *cams.urls, "-o", str(out), "--model", str(tiny_model), "--serve", str(port),
            "--reconnect-max-delay", "1", "--timeout", "2", "-q") as proc:
        a, b = cams.urls
        wait(lambda: all(x["frames_written"] >= 10 for x in stats().values()) and len(stats()) == 2, "both recording")
        cams.stop(1)
        rows = wait(lambda: (r := stats()) and not r[b]["connected"] and r, "b reconnecting")
        before = rows[a]["frames_written"]
        time.sleep(3.0)
        rows = stats()
        assert not rows[b]["connected"] and not rows[b].get("error") and rows[a]["frames_written"] >= before + 15
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.value.code == 503 and "reconnecting" in health.value.read().decode()
        cams.start(1)
        written = rows[b]["frames_written"]
        wait(lambda: (r := stats()[b])["connected"] and r["frames_written"] >= written + 10, "b recording again")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
