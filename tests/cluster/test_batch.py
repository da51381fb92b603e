"""streamseg batch on Ray: every good clip annotated like the single-file CLI, failures recorded, resumable.

One local Ray cluster (``ray start --head``, 2 CPUs) serves the whole test session; each
test's driver joins it with ``--ray ADDRESS`` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ROOT, decode, run_cli, scene_frames, write_clip

ray = pytest.importorskip("ray")


# One test worker runs every Ray test, on one cluster; a Ray job beside the rest of the suite may take minutes.
pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    frames = scene_frames(30, 160, 96)
    paths = []
    for k, n in enumerate((30, 45, 24)):
        paths.append(write_clip(folder / f"clip{k}.mp4", frames[:n] if n <= 30 else frames + frames[:n - 30],
                                list(range(n)), Fraction(1, 25)))
    (folder / "sub").mkdir()
    paths.append(write_clip(folder / "sub" / "clip0.mp4", frames[:20], list(range(20)), Fraction(1, 25)))  # same name
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(paths[0].read_bytes()[:3000])
    return folder, paths, corrupt


def batch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return run_cli("batch", *args, "-q", timeout=timeout, subprocess_only=True)  # a Ray driver: its own process


def manifest(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]


def test_a_batch_annotates_every_good_clip_as_the_cli_does_with_its_drawing_flags_and_records_the_corrupt_one(
        ray_address, clips, tiny_model, tmp_path):
    folder, paths, corrupt = clips
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(["# the clips", *map(str, paths), str(corrupt)]) + "\n")
    out = tmp_path / "out"
    flags = ["--style", "blur-background", "--keep", "class1", "--legend", "--alpha", "0.7"]  # reach the workers
    proc = batch(str(listing), "-o", str(out), "--ray", ray_address, "--model", str(tiny_model), *flags)
    assert proc.returncode == 1, proc.stderr  # one input failed
    assert "5 inputs: 4 done, 1 failed, 0 skipped" in proc.stderr
    # streamseg's own lines only: none of Ray's C++ logger or colour codes (issue 23)
    assert all(line.startswith("streamseg: ") for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    rows = {r["input"]: r for r in manifest(out)}
    assert set(rows) == {*map(str, paths), str(corrupt)}
    assert rows[str(corrupt)]["status"] == "failed" and "not a readable video" in rows[str(corrupt)]["reason"]
    outputs = [rows[str(p)]["output"] for p in paths]
    assert len(set(outputs)) == 4  # clip0.mp4 twice, in two folders: two outputs
    for p in paths:
        row = rows[str(p)]
        assert row["status"] == "done" and row["worker"] and row["fps"] > 0
        frames, times = decode(out / row["output"])
        single = tmp_path / f"single-{row['output']}"
        assert run_cli(str(p), "-o", str(single), "--model", str(tiny_model), "-q", *flags).returncode == 0
        ref_frames, ref_times = decode(single)
        assert len(frames) == len(ref_frames) == row["frames"]
        assert times == ref_times  # the same timestamps as the single-file CLI...
        assert max(abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, ref_frames)) < 0.5  # ...pictures
    assert not list(out.glob(".*partial*"))  # nothing half-written left


def test_a_killed_batch_resumes_without_redoing_finished_work(ray_address, tiny_model, tmp_path):
    frames = scene_frames(20, 192, 108)
    inputs = [write_clip(tmp_path / f"v{k}.mp4", frames * 2, list(range(40)), Fraction(1, 25)) for k in range(4)]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "streamseg", "batch", *map(str, inputs), "-o", str(out), "--ray", ray_address,
            "--model", str(tiny_model), "--workers", "1", "--batch-size", "1", "-q"]
    driver = subprocess.Popen(argv, stderr=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if (out / "manifest.jsonl").exists() and any(r["status"] == "done" for r in manifest(out)):
            break
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # the driver dies mid-batch
    driver.wait()
    first = manifest(out)
    finished = {r["input"] for r in first if r["status"] == "done"}
    assert 1 <= len(finished) < 4
    done_files = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in first if r["status"] == "done"}

    proc = batch(*map(str, inputs), "-o", str(out), "--ray", ray_address, "--model", str(tiny_model))
    assert proc.returncode == 0, proc.stderr
    rows = manifest(out)[len(first):]
    assert {r["input"] for r in rows if r["status"] == "skipped"} == finished  # checked complete, not redone
    assert {r["input"] for r in rows if r["status"] == "done"} == {str(p) for p in inputs} - finished
    for name, mtime in done_files.items():
        assert (out / name).stat().st_mtime_ns == mtime
    for p in inputs:
        (row,) = [r for r in rows if r["input"] == str(p)]
        assert len(decode(out / row["output"])[0]) == 40


def test_a_truncated_output_is_not_taken_for_a_finished_one(ray_address, clips, tiny_model, tmp_path):
    folder, paths, _ = clips
    out = tmp_path / "out"
    assert batch(str(paths[0]), "-o", str(out), "--ray", ray_address, "--model", str(tiny_model)).returncode == 0
    (row,) = manifest(out)
    target = out / row["output"]
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])  # damaged after the fact
    proc = batch(str(paths[0]), "-o", str(out), "--ray", ray_address, "--model", str(tiny_model))
    assert proc.returncode == 0 and "1 done, 0 failed, 0 skipped" in proc.stderr
    assert len(decode(target)[0]) == 30


def test_two_workers_process_different_files_at_the_same_time(ray_address, tiny_model, tmp_path):
    frames = scene_frames(30, 320, 180)
    inputs = [write_clip(tmp_path / f"w{k}.mp4", frames * 4, list(range(120)), Fraction(1, 25)) for k in range(4)]
    out = tmp_path / "out"
    proc = batch(*map(str, inputs), "-o", str(out), "--ray", ray_address, "--model", str(tiny_model),
                 "--workers", "2", "--batch-size", "1")
    assert proc.returncode == 0, proc.stderr
    rows = manifest(out)
    assert len({r["worker"] for r in rows}) == 2
    from datetime import datetime

    spans = {}
    for r in rows:
        end = datetime.fromisoformat(r["time"]).timestamp()
        spans.setdefault(r["worker"], []).append((end - r["seconds"], end))
    (a, b) = spans.values()
    assert any(s1 < e2 - 0.5 and s2 < e1 - 0.5 for s1, e1 in a for s2, e2 in b)  # work overlapped in time


def test_asking_for_a_gpu_that_is_not_there_fails_fast(ray_address, clips, tiny_model, tmp_path):
    folder, paths, _ = clips
    t0 = time.monotonic()
    proc = batch(str(paths[0]), "-o", str(tmp_path / "out"), "--ray", ray_address, "--model", str(tiny_model),
                 "--gpus-per-worker", "1", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("streamseg: error: --gpus-per-worker 1 asks for GPUs, but the Ray "
                                                   "cluster has 0: use --gpus-per-worker 0 (CPU) or a cluster with GPUs")
    assert time.monotonic() - t0 < 90


def test_without_ray_it_says_how_to_install_it(monkeypatch, tmp_path):
    from streamseg.cluster.batch import BatchConfig, run_batch
    from streamseg.errors import InputError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'streamseg\[ray\]'"):
        run_batch(BatchConfig(inputs=("x.mp4",), outdir=tmp_path / "o"))


def test_output_names_are_readable_and_unique(tmp_path):
    from streamseg.cluster.batch import expand_inputs, output_name

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "cam 1.mp4").write_bytes(b"")
    (tmp_path / "a" / "notes.md").write_text("x")
    found = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*" / "*.mp4"), "rtsp://h/x.sdp"])
    assert found == [str(tmp_path / "a" / "cam 1.mp4"), str(tmp_path / "b" / "cam 1.mp4"), "rtsp://h/x.sdp"]
    names = [output_name(f) for f in found]
    assert len(set(names)) == 3 and names[0].startswith("cam-1-") and names[2].startswith("x-")


def test_without_an_address_it_starts_its_own_local_ray(clips, tiny_model, tmp_path):
    folder, paths, _ = clips
    out = tmp_path / "out"
    proc = batch(str(paths[2]), "-o", str(out), "--model", str(tiny_model))  # no --ray
    assert proc.returncode == 0, proc.stderr
    (row,) = manifest(out)
    assert row["status"] == "done" and len(decode(out / row["output"])[0]) == 24
