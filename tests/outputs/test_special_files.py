"""Outputs aimed at special files (a device, a FIFO, a link to one): JSON Lines stream into them in place; video,
images and masks are refused in one line; none is ever renamed over or removed (issue 24)."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from conftest import SAMPLE_CLIP, run_cli

ARGS = ("--duration", "0.4", "-q", "--no-display")


def _reader(path, into: list) -> threading.Thread:
    """A reader on a FIFO (a thread: opening a FIFO for writing waits for one)."""
    def read() -> None:
        with open(path, encoding="utf-8") as f:
            into.extend(f.read().splitlines())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("through_link", [False, True])
def test_json_lines_stream_into_a_fifo_which_stays_a_fifo(tiny_model, tmp_path, through_link):
    fifo = tmp_path / "seg.fifo"
    os.mkfifo(fifo)
    target = fifo
    if through_link:  # as /proc/self/fd/1 is a link to a pipe
        target = tmp_path / "link.jsonl"
        target.symlink_to(fifo)
    lines: list[str] = []
    reader = _reader(fifo, lines)
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "--json", str(target), *ARGS)
    reader.join(10)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["frame"] for line in lines] == list(range(10))  # the reader got every record
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not list(tmp_path.glob(".*partial*"))
    assert not through_link or target.is_symlink()


def test_json_lines_into_a_character_device_write_in_place(tiny_model, tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of the test's own
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "--json", str(null), *ARGS)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(null).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]


@pytest.mark.parametrize("flag, name", [("-o", "out.mp4"), ("-o", "out.png"), ("--masks", "masks")])
def test_video_images_and_masks_aimed_at_a_special_file_are_refused_in_one_line(tiny_model, tmp_path, flag, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), flag, str(fifo), *ARGS)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"streamseg: error: {flag} {fifo} is not a regular file (a device, FIFO or "
                                        f"socket): write the {'masks' if flag == '--masks' else 'video or image'} "
                                        "to a file or folder"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == [name]
