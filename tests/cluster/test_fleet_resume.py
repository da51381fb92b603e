"""A fleet source that delivered frames before is waited for wherever it runs next; one that never worked fails.

The worker is driven directly (as the driver does over Ray), so these run without a Ray cluster.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from conftest import StreamServer, decode

from streamseg.cluster.fleet_plan import FleetConfig
from streamseg.config import ModelConfig, OutputConfig
from streamseg.serve.metrics import problem


@pytest.fixture
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_moved_source_whose_camera_is_down_is_waited_for_and_one_that_never_worked_fails(
        tiny_model, tmp_path, keep_torch_threads):
    from streamseg.cluster.fleet_worker import FleetWorker

    out = tmp_path / "out"
    out.mkdir()
    cam, never = StreamServer(), StreamServer()  # neither is listening yet: both refuse connections
    config = FleetConfig(sources=(cam.url, never.url), outdir=out, json_export=True,
                         model=ModelConfig(name=str(tiny_model), device="cpu"), orphan_timeout=60.0,
                         outputs=OutputConfig(output=Path("rec.mp4"), json_path=Path("rec.jsonl"), segment_time=300.0))
    worker = FleetWorker(config, "w", exit_when_orphaned=False)
    try:
        # "cam" recorded on another worker a moment ago (the driver says so); "never" has never delivered a frame
        worker.assign({"cam": cam.url, "never": never.url}, worked=["cam"])
        status = _wait(lambda: (s := worker.status())["failed"] and s["running"] == ["cam"] and s["sources"] and s,
                       60, "the run with cam only")
        assert list(status["failed"]) == ["never"] and "Connection refused" in status["failed"]["never"]
        time.sleep(2.0)  # cam is retried with the backoff, not failed
        status = worker.status()
        assert "cam" not in status["failed"] and status["running"] == ["cam"]
        figures = {f.source: f for f in status["sources"]}["cam"]
        assert figures.connected is False and problem(figures) == "reconnecting"  # as /stats and /metrics show it
        cam.start()  # the camera comes back
        figures = _wait(lambda: (f := {f.source: f for f in worker.status()["sources"]}.get("cam"))
                        and f.frames_written >= 15 and f, 60, "cam recording")
        assert figures.connected and figures.reconnects == 1 and problem(figures) is None
    finally:
        final = worker.stop()
        cam.stop()
    assert "cam" not in final["failed"]
    frames, times = decode(out / "cam" / "rec-000.mp4")
    assert len(frames) >= 15 and times[0] == 0.0  # the recording starts at the camera's first frame
