"""The command line end to end: real files in, real files out, decoded and checked."""

import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ROOT, SAMPLE_CLIP, SAMPLE_IMAGE, cli_process, decode, run_cli, scene_frames, wait_for_size, write_clip
from PIL import Image

from streamseg.cli import main
from streamseg.config import ModelConfig
from streamseg.models.segmenter import Segmenter
from streamseg.outputs.files import partial_path
from streamseg.render.renderer import blend, palette


@pytest.fixture(scope="module")
def tiny_segmenter(tiny_model):
    return Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))


def test_video_to_mp4_keeps_every_frame_timestamp_and_the_audio(tiny_model, tiny_segmenter, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_model), "--batch-size", "3", "-q"]) == 0
    assert "frames read 100, written 100, dropped 0" in capsys.readouterr().err

    src_frames, src_times = decode(SAMPLE_CLIP)
    out_frames, out_times = decode(out)
    assert len(out_frames) == len(src_frames) == 100
    assert out_times == pytest.approx(src_times, abs=1e-6)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert a.codec_context.name == "aac"
        audio_seconds = sum(p.duration for p in c.demux(a) if p.duration) * a.time_base
    assert float(audio_seconds) == pytest.approx(4.0, abs=0.05)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while downloading

    # The pixels are the alpha blend of the palette colours over the model's label map (within H.264's loss).
    colours = palette(tiny_segmenter.num_labels)
    for i in (0, 50, 99):
        expected = blend(src_frames[i], tiny_segmenter([src_frames[i]])[0], colours, 0.4)
        err = np.abs(out_frames[i].astype(int) - expected.astype(int)).mean()
        assert err < 2.5, f"frame {i}: mean error {err:.2f}"
        assert np.abs(out_frames[i].astype(int) - src_frames[i].astype(int)).mean() > 10  # the overlay is there


def test_variable_frame_rate_input_keeps_its_timestamps(tiny_model, tmp_path):
    pts = [0, 40, 80, 200, 220, 240, 600, 640, 1000, 1010]  # milliseconds, irregular
    src = write_clip(tmp_path / "vfr.mp4", scene_frames(len(pts)), pts, Fraction(1, 1000))
    out = tmp_path / "out.mp4"
    assert main([str(src), "-o", str(out), "--model", str(tiny_model), "-q"]) == 0
    _, src_times = decode(src)
    _, out_times = decode(out)
    assert src_times == pytest.approx([p / 1000 for p in pts])
    assert out_times == pytest.approx(src_times, abs=1e-6)


def test_image_to_png_is_the_exact_blend(tiny_model, tiny_segmenter, tmp_path):
    out = tmp_path / "overlay.png"
    assert main([str(SAMPLE_IMAGE), "-o", str(out), "--model", str(tiny_model), "--alpha", "0.6", "-q"]) == 0
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    expected = blend(image, tiny_segmenter([image])[0], palette(tiny_segmenter.num_labels), 0.6)
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_folder_of_images_to_folder(tiny_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name, (w, h) in {"a.jpg": (64, 48), "b.png": (33, 21), "c.jpeg": (80, 80)}.items():
        Image.fromarray(scene_frames(1, w, h)[0]).save(src / name)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "--model", str(tiny_model), "-q"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a.png", "b.png", "c.png"]
    with Image.open(out / "b.png") as im:
        assert im.size == (33, 21)


def test_odd_sized_video_is_padded_to_an_even_size(tiny_model, tmp_path):
    src = write_clip(tmp_path / "odd.mkv", [np.zeros((97, 161, 3), np.uint8)] * 5, list(range(5)), Fraction(1, 25),
                     codec="ffv1")
    out = tmp_path / "out.mp4"
    assert main([str(src), "-o", str(out), "--model", str(tiny_model), "-q"]) == 0
    frames, _ = decode(out)
    assert len(frames) == 5 and frames[0].shape == (98, 162, 3)


def _bad_inputs(tmp_path, tiny_model):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    m = ["--model", str(tiny_model)]
    clip = str(SAMPLE_CLIP)
    return {
        "missing file": ([str(tmp_path / "nope.mp4"), *m], 2, "no such file or folder: .*nope.mp4"),
        "random bytes": ([str(junk), *m], 2, "not a readable video: .*junk.mp4"),
        "unknown model": ([clip, "-o", str(tmp_path / "o.mp4"), "--model", "nobody/no-such-model"], 2,
                          "model 'nobody/no-such-model' not found: .*--model PATH"),
        "missing model folder": ([clip, "--model", str(tmp_path / "nomodel")], 2, "model folder not found"),
        "absent camera": (["--camera", "9", "--no-display", *m], 2, "camera 9 not found"),
        "missing output folder": ([clip, "-o", str(tmp_path / "no" / "o.mp4"), *m], 2, "output folder does not exist"),
        "output under a file": ([clip, "-o", str(not_a_dir / "o.mp4"), *m], 2, "output folder does not exist"),
        "unwritable output": ([clip, "-o", "/proc/streamseg-test.mp4", *m], 2, "(cannot create|not writable).*/proc"),
        "video into one image": ([clip, "-o", str(tmp_path / "o.png"), *m], 2, "holds one image"),
        "unknown output type": ([clip, "-o", str(tmp_path / "o.xyz"), *m], 2, "unsupported output"),
        "no input": (["--no-display", *m], 2, "give an INPUT"),
        "bad batch size": ([clip, "--batch-size", "0", *m], 2, "invalid batch size 0"),
        "bad alpha": ([clip, "--alpha", "1.5", *m], 2, "invalid alpha 1.5"),
        "unreachable stream": (["tcp://127.0.0.1:9/live", "--timeout", "2", "--json", str(tmp_path / "o.jsonl"), *m], 2,
                               "cannot open stream: tcp://127.0.0.1:9/live"),
        "protocol not built in": (["srt://127.0.0.1:9", "--timeout", "2", "--json", str(tmp_path / "o.jsonl"), *m], 2,
                                  "cannot open stream: srt://127.0.0.1:9 .*(no 'srt' protocol|Connection refused)"),
    }


BAD = ["missing file", "random bytes", "unknown model", "missing model folder", "absent camera",
       "missing output folder", "output under a file", "unwritable output", "video into one image",
       "unknown output type", "no input", "bad batch size", "bad alpha", "unreachable stream", "protocol not built in"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, tiny_model, capsys):
    argv, code, pattern = _bad_inputs(tmp_path, tiny_model)[case]
    assert main([*argv, "-q"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("streamseg: error: ")
    import re

    assert re.search(pattern, err[0]), err[0]


def test_no_display_with_nothing_to_write_is_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a model that does not exist: the check comes before loading it, so its error is not the one shown
    assert main([str(SAMPLE_CLIP), "--no-display", "--model", "nobody/no-such-model", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamseg: error: nothing to write or show: --no-display without -o, --json, --masks or --serve "
                   "(add -o out.mp4, or leave out --no-display to watch)"]
    assert list(tmp_path.iterdir()) == []
    # a missing input is still named first
    assert main([str(tmp_path / "nope.mp4"), "--no-display", "--model", "nobody/no-such-model", "-q"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_corrupt_video_reports_no_traceback_and_keeps_nothing_broken(tiny_model, tmp_path):
    # The sample clip with its middle overwritten: decodes partly, then fails or ends early.
    data = bytearray(SAMPLE_CLIP.read_bytes())
    rng = np.random.default_rng(5)
    data[len(data) // 3: len(data) // 3 + 20_000] = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    proc = run_cli(str(bad), "-o", str(out), "--model", str(tiny_model), "-q")
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    frames, _ = decode(out)  # whatever was written is playable
    assert len(frames) > 0


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "streamseg", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    for flag in ("--camera", "--model", "--device", "--dtype", "--batch-size", "--drop-policy", "--alpha",
                 "--legend", "--show-fps", "--no-display"):
        assert flag in proc.stdout


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    frames = scene_frames(40, 320, 180)
    n = 1500
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", [frames[i % 40] for i in range(n)],
                      list(range(n)), Fraction(1, 25), audio_seconds=n / 25)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_a_playable_file_with_every_frame_written(sig, long_clip, tiny_model, tmp_path):
    out = tmp_path / "rec.mp4"
    with cli_process(str(long_clip), "-o", str(out), "--model", str(tiny_model), "--batch-size", "1", "-q") as proc:
        wait_for_size(partial_path(out), 20_000)  # a file job writes beside its output until complete
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped early" in err
    written = int(err.split("written ")[1].split(",")[0])
    frames, times = decode(out)
    assert 0 < len(frames) == written < 1500
    assert times == pytest.approx([i / 25 for i in range(written)])
    with av.open(str(out)) as c:  # the audio stops with the video
        a = c.streams.audio[0]
        audio = float(sum(p.duration for p in c.demux(a) if p.duration) * a.time_base)
    assert audio == pytest.approx(written / 25, abs=0.2)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI as a stream server (apt-get install ffmpeg)")
def test_tcp_stream_in(tiny_model, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(SAMPLE_CLIP), "-c", "copy",
                               "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"])
    try:
        deadline = time.monotonic() + 15  # ffmpeg listens once it has opened its input (slower on busy cores)
        while f":{port:04X} 00000000:0000 0A" not in Path("/proc/net/tcp").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = tmp_path / "live.mp4"
        proc = run_cli(f"tcp://127.0.0.1:{port}", "-o", str(out), "--model", str(tiny_model), "--no-display", "--reconnect", "0",
                       timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.kill()
        server.wait()
    read = int(proc.stderr.split("frames read ")[1].split(",")[0])
    written = int(proc.stderr.split("written ")[1].split(",")[0])
    dropped = int(proc.stderr.split("dropped ")[1].split(";")[0])
    # The live contract, whatever the machine's load: every frame read is written or dropped (oldest first) and
    # counted, and the recording spans the 4-second stream from 0, as the wall clock did.
    assert read == written + dropped and written > 0 and read >= 90
    frames, times = decode(out)
    assert len(frames) == written and times[0] == 0.0 and times[-1] > 3.0



def test_a_failure_while_running_is_exit_1_in_one_line(tiny_model, monkeypatch, capsys, tmp_path):
    def broken(self, frames):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Segmenter, "segment", broken)
    out = tmp_path / "out.mp4"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_model), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamseg: error: RuntimeError: CUDA error: an illegal memory access was encountered "
                   "(run with --debug for details)"]
    assert not out.exists()  # no frame was written: no empty, unplayable file is left behind


def test_http_image_url_in(tiny_model, tiny_segmenter, tmp_path, capsys):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SAMPLE_IMAGE.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{SAMPLE_IMAGE.name}"
        out = tmp_path / "o.png"
        assert main([url, "-o", str(out), "--model", str(tiny_model), "-q"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.startswith("Segmented parts:\n")
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    expected = blend(image, tiny_segmenter([image])[0], palette(tiny_segmenter.num_labels), 0.4)
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_unreachable_image_url_is_one_line(tiny_model, capsys):
    assert main(["http://127.0.0.1:9/photo.jpg", "-o", "/tmp/x.png", "--model", str(tiny_model), "--timeout", "2",
                 "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download image http://127.0.0.1:9/photo.jpg (" in err[0]


def test_file_jobs_show_a_progress_bar_with_rate_and_eta(tiny_model, tmp_path, capsys):
    assert main([str(SAMPLE_CLIP), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model)]) == 0
    err = capsys.readouterr().err
    assert "100/100" in err and "frame/s" in err and "<" in err  # tqdm: count, rate, elapsed<remaining
    summary = err.strip().splitlines()[-2]
    assert summary.startswith("streamseg: frames read 100, written 100, dropped 0; ")
    assert "mean ms per frame: decode " in summary and ", inference " in summary and ", write " in summary


def test_a_second_sigint_stops_without_the_frames_in_flight_and_still_closes_the_file(long_clip, demo_model, tmp_path):
    out = tmp_path / "rec.mp4"
    with cli_process(str(long_clip), "-o", str(out), "--model", str(demo_model), "--batch-size", "8", "-q") as proc:
        wait_for_size(partial_path(out), 20_000)  # a file job writes beside its output until complete
        proc.send_signal(signal.SIGINT)
        first = ""  # wait until the first stop is under way (said once it is handled: two signals sent back to
        while "finishing the frames in flight" not in first:  # back may arrive as one), 16 frames queued
            line = proc.stderr.readline()
            assert line, first
            first += line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        err = first + err
    assert proc.returncode == 0, err
    assert "second SIGINT: stopping now" in err and "Traceback" not in err
    read = int(err.split("frames read ")[1].split(",")[0])
    written = int(err.split("written ")[1].split(",")[0])
    assert 0 < written < read  # frames in flight were left out...
    frames, times = decode(out)
    assert len(frames) == written  # ...and the file holds every frame written, properly closed
    assert times == pytest.approx([i / 25 for i in range(written)])
