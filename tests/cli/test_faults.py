"""The output contract under faults, and bad input as one line with exit 2: each case an adversarial user tried.

Nothing an input holds is ever overwritten; a file output appears whole or not at all; a failure keeps
what was written and says so; damaged, rotated and empty inputs are handled as players handle them.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
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
from conftest import ROOT, SAMPLE_CLIP, SAMPLE_IMAGE, cli_process, decode, run_cli, scene_frames, write_clip
from PIL import Image

from streamseg.cli import main
from streamseg.outputs.files import partial_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamseg: error: "), err
    return err[0]


@pytest.fixture()
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.mp4"
    shutil.copy(SAMPLE_CLIP, path)
    return path


# -- 1. outputs never touch inputs ------------------------------------------------------------
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "json", "masks folder", "segment name"])
def test_an_output_onto_an_input_is_refused_and_the_input_untouched(how, victim, tiny_model, tmp_path, capsys):
    before = digest(victim)
    args = {"same path": ["-o", str(victim)],
            "json": ["--json", str(victim), "--no-display"]}.get(how)
    if how == "symlink":
        (tmp_path / "link.mp4").symlink_to(victim)
        args = ["-o", str(tmp_path / "link.mp4")]
    elif how == "hard link":
        os.link(victim, tmp_path / "hard.mp4")
        args = ["-o", str(tmp_path / "hard.mp4")]
    elif how == "masks folder":  # a numbered PNG as input inside the masks folder
        frames = tmp_path / "frames"
        frames.mkdir()
        Image.open(SAMPLE_IMAGE).save(frames / "000000.png")
        assert main([str(frames / "000000.png"), "--masks", str(frames), "--model", str(tiny_model), "-q",
                     "--no-display"]) == 2
        assert "would write over the input" in one_error(capsys)
        return
    elif how == "segment name":
        rec = tmp_path / "rec-001.mp4"
        shutil.copy(victim, rec)
        assert main([str(rec), "-o", str(tmp_path / "rec.mp4"), "--segment-time", "1", "--model", str(tiny_model),
                     "-q"]) == 2
        assert one_error(capsys).endswith(f"would write over the input {rec}: write the output elsewhere")
        return
    assert main([str(victim), *args, "--model", str(tiny_model), "-q"]) == 2
    assert "would write over the input" in one_error(capsys)
    assert digest(victim) == before


def test_a_folder_of_images_into_itself_is_refused(tiny_model, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(SAMPLE_IMAGE).save(folder / "a.png")
    before = digest(folder / "a.png")
    assert main([str(folder), "-o", str(folder), "--model", str(tiny_model), "-q"]) == 2
    assert one_error(capsys) == f"streamseg: error: -o {folder} would write over the input {folder}: write the output elsewhere"
    assert digest(folder / "a.png") == before and [p.name for p in folder.iterdir()] == ["a.png"]


# -- 3. atomic file outputs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    frames = scene_frames(40, 320, 180)
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", [frames[i % 40] for i in range(750)],
                      list(range(750)), Fraction(1, 25))


@pytest.mark.parametrize("after", [0.5, 4.0], ids=["while-loading", "while-writing"])
def test_a_killed_file_job_leaves_the_old_output_untouched(after, long_clip, tiny_model, tmp_path):
    out = tmp_path / "o.mp4"
    shutil.copy(SAMPLE_CLIP, out)  # the result of an earlier run
    before = digest(out)
    with cli_process(str(long_clip), "-o", str(out), "--model", str(tiny_model), "-q", "--batch-size", "1") as proc:
        deadline = time.monotonic() + after
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert digest(out) == before  # never truncated, never half-replaced
    assert len(decode(out)[0]) == 100


def _limit(size: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


def test_a_full_disk_on_a_file_job_is_one_line_at_once_and_leaves_the_old_output(long_clip, tiny_model, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"older")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamseg", str(long_clip), "-o", str(out), "--model",
                           str(tiny_model), "-q"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          preexec_fn=_limit(300_000), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"streamseg: error: cannot write {out}: ") and "File too large" in lines[0]
    assert "frames read" not in proc.stderr  # reported when it happened, not after the whole clip
    assert out.read_bytes() == b"older" and not partial_path(out).exists()
    assert time.monotonic() - t0 < 60


def test_json_on_a_full_disk_names_the_file(tiny_model, tmp_path):
    jsonl = tmp_path / "seg.jsonl"
    proc = subprocess.run([sys.executable, "-m", "streamseg", str(SAMPLE_CLIP), "--json", str(jsonl), "--json-masks",
                           "--no-display", "--model", str(tiny_model), "-q"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, preexec_fn=_limit(20_000), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"streamseg: error: cannot write {jsonl}: [Errno 27]")


def test_a_read_only_output_is_protected(victim, tiny_model, tmp_path, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    out.chmod(0o444)
    assert main([str(victim), "-o", str(out), "--model", str(tiny_model), "-q"]) == 2
    assert one_error(capsys) == (f"streamseg: error: output exists and is read-only: {out} (make it writable or "
                                 "choose another name)")
    assert out.read_bytes() == b"precious"


def test_a_failure_keeps_the_frames_before_it_and_says_where(victim, tiny_model, tmp_path):
    """A model that fails at frame 60: the video and JSON up to it are kept under their names, and said so."""
    script = (f"import sys; sys.argv=['streamseg']; from streamseg.models.segmenter import Segmenter as S; o=S.segment\n"
              f"def f(self, frames):\n    if any(x.index >= 60 for x in frames): raise RuntimeError('device lost')\n"
              f"    return o(self, frames)\nS.segment=f\nfrom streamseg.cli import main\n"
              f"sys.exit(main({[str(victim), '-o', str(tmp_path / 'o.mp4'), '--json', str(tmp_path / 'o.jsonl'), '--model', str(tiny_model), '-q', '--batch-size', '4']!r}))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.strip().splitlines() if "converted the model to OpenVINO" not in x]  # 1st use
    assert lines == [
        f"streamseg: kept what was written before the error: 2 files: {tmp_path / 'o.mp4'}, {tmp_path / 'o.jsonl'}",
        "streamseg: error: RuntimeError: device lost (run with --debug for details)"]
    assert len(decode(tmp_path / "o.mp4")[0]) == 60
    assert [json.loads(x)["frame"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == list(range(60))


# -- 4. empty, rotated and damaged inputs ------------------------------------------------------
def test_a_video_with_no_frames_is_said_so_and_writes_nothing(tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty.mkv"  # a video stream that holds no frame (the audio alone)
    with av.open(str(SAMPLE_CLIP)) as src, av.open(str(empty), "w") as dst:
        dst.add_stream_from_template(src.streams.video[0])
        audio = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = audio
                dst.mux(packet)
    out = tmp_path / "o.mp4"
    assert main([str(empty), "-o", str(out), "--model", str(tiny_model), "-q"]) == 2
    assert one_error(capsys) == f"streamseg: error: no video frames in {empty}"
    assert not out.exists() and not partial_path(out).exists()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI (apt-get install ffmpeg)")
def test_a_phone_video_with_a_rotation_is_turned_upright_as_ffmpeg_shows_it(tiny_model, tmp_path):
    image = np.zeros((48, 96, 3), np.uint8)
    image[:12] = 255  # a white band along the top
    plain = write_clip(tmp_path / "plain.mp4", [image] * 5, list(range(5)), Fraction(1, 25))
    rotated = tmp_path / "rotated.mp4"  # the display matrix a phone writes when held upright
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=90",
                    str(rotated)], check=True)
    shown = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo",
                            "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout  # as players show it
    upright = np.frombuffer(shown, np.uint8).reshape(96, 48, 3)
    out = tmp_path / "o.png"
    masks = tmp_path / "m"
    assert main([str(rotated), "-o", str(tmp_path / "o.mp4"), "--masks", str(masks), "--model", str(tiny_model),
                 "-q", "--alpha", "0"]) == 0
    frames, _ = decode(tmp_path / "o.mp4")
    assert frames[0].shape == (96, 48, 3) and np.abs(frames[0].astype(int) - upright.astype(int)).mean() < 8
    assert Image.open(masks / "000000.png").size == (48, 96)
    assert not out.exists()


def test_a_damaged_packet_is_skipped_counted_and_the_rest_goes_on(tiny_model, tmp_path):
    good = write_clip(tmp_path / "good.mp4", scene_frames(10, 160, 96), list(range(10)), Fraction(1, 25))
    bad = tmp_path / "bad.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(good)) as src, av.open(str(bad), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for k, packet in enumerate(p for p in src.demux(src.streams.video[0]) if p.dts is not None):
            if k == 4:  # its payload replaced by noise
                data = bytes(packet)
                junk = av.Packet(data[:4] + rng.integers(0, 256, len(data) - 4, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                packet = junk
            packet.stream = stream
            dst.mux(packet)
    out = tmp_path / "o.mp4"
    proc = run_cli(str(bad), "-o", str(out), "--model", str(tiny_model), "-q")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"streamseg: WARNING: {bad}: skipped 1 damaged packet\n" in err
    assert "frames read 9, written 9, dropped 0, damaged packets skipped 1;" in err
    assert len(decode(out)[0]) == 9


# -- 9-12. bad input is exit 2 and one line; a closed stdout is not a failure ----------------------------------
def _bomb(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(path)  # 200 megapixels in a few kilobytes
    return path


@pytest.mark.parametrize("case", ["camera -1", "camera:-1", "camera:abc", "bomb", "background", "segment nan",
                                  "duration nan", "timeout nan", "bad shapes", "truncated weights"])
def test_bad_input_is_one_line_and_exit_2(case, tiny_model, tmp_path, capsys):
    from conftest import save_tiny_segformer

    m = ["--model", str(tiny_model), "-q", "--json", str(tmp_path / "o.jsonl")]  # checks before any is written
    clip = str(SAMPLE_CLIP)
    if case in ("bad shapes", "truncated weights"):
        broken = save_tiny_segformer(tmp_path / "broken")
        if case == "bad shapes":
            config = json.loads((broken / "config.json").read_text())
            config["decoder_hidden_size"] = 32
            (broken / "config.json").write_text(json.dumps(config))
        else:
            weights = broken / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:5000])
        m = ["--model", str(broken), "-q", "--json", str(tmp_path / "o.jsonl")]
    not_an_image = tmp_path / "bg.png"
    not_an_image.write_text("hello")
    argv, expected = {
        "camera -1": (["--camera", "-1", *m], "invalid camera 'camera:-1'"),
        "camera:-1": (["camera:-1", *m], "invalid camera 'camera:-1'"),
        "camera:abc": (["camera:abc", *m], "invalid camera 'camera:abc'"),
        "bomb": ([str(_bomb(tmp_path)), *m] if case == "bomb" else [], "image too large to read safely"),
        "background": ([clip, "--style", "replace-background", "--keep", "class1", "--background", str(not_an_image),
                        *m], f"--background {not_an_image}: not a readable image"),
        "segment nan": ([clip, "-o", str(tmp_path / "o.mp4"), "--segment-time", "nan", *m], "invalid time 'nan'"),
        "duration nan": ([clip, "--duration", "nan", *m], "invalid time 'nan'"),
        "timeout nan": ([clip, "--timeout", "nan", *m], "invalid --timeout nan"),
        "bad shapes": ([clip, *m], "its weights do not fit its config.json"),
        "truncated weights": ([clip, *m], "its weights file is damaged or incomplete"),
    }[case]
    assert main(argv) == 2
    assert expected in one_error(capsys)


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="the window tests' X server is not installed")
def test_a_stale_display_is_one_line_before_any_output_is_created(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":87")  # no X server there
    out = tmp_path / "o.mp4"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--display", "--model", str(tiny_model), "-q"]) == 2
    assert one_error(capsys).startswith("streamseg: error: cannot open a window on DISPLAY=:87: no X server answers")
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_does_not_fail_the_run(tiny_model, tmp_path):
    out = tmp_path / "o.png"
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", str(SAMPLE_IMAGE), "-o", str(out), "--model",
                             str(tiny_model), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    proc.stdout.close()  # `| head -1` that has already exited
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and out.exists()


def test_secrets_in_a_url_never_reach_the_error_line(tiny_model, tmp_path, capsys):
    assert main(["tcp://admin:s3cretPW@127.0.0.1:9/live?token=abc", "--timeout", "2", "-o", str(tmp_path / "o.mp4"),
                 "--model", str(tiny_model), "-q"]) == 2
    line = one_error(capsys)
    assert "s3cretPW" not in line and "abc" not in line and "tcp://admin:***@127.0.0.1:9/live?token=***" in line
