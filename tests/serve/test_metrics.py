"""--serve's /metrics (Prometheus text, read back with prometheus-client's own parser) and /healthz."""

from __future__ import annotations

import threading
import time
from urllib.error import HTTPError
from urllib.request import urlopen

from fakes import ListSource, RecordingSink, mean_segmenter, renderer
from prometheus_client.parser import text_string_to_metric_families

from streamseg.pipeline.pipeline import Pipeline, Route
from streamseg.pipeline.stats import Snapshot
from streamseg.serve.server import PreviewServer


def _get(url: str) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as ``{(name, sorted labels): value}``, parsed by prometheus-client."""
    status, text = _get(url)
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def live_source(name: str, n: int, **kwargs) -> ListSource:
    source = ListSource(n, live=True, interval=0.01, **kwargs)
    source.description = name
    return source


def test_metrics_move_and_health_names_the_source_that_failed():
    sources = [live_source("cam-a", 400), live_source("cam-b", 400, fail_at=60)]
    pipeline = Pipeline([Route(s, renderer(), RecordingSink()) for s in sources], mean_segmenter(), batch_size=2)
    with PreviewServer("0", stats=pipeline.snapshot) as server:
        runner = threading.Thread(target=pipeline.run)
        runner.start()
        try:
            time.sleep(0.3)
            first = scrape(server.url + "metrics")
            assert _get(server.url + "healthz") == (200, "ok: 2 sources live\n")
            deadline = time.monotonic() + 10
            while pipeline.routes[1].error is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            second = scrape(server.url + "metrics")
            status, text = _get(server.url + "healthz")
        finally:
            pipeline.request_stop()
            runner.join(timeout=20)
    a = (("source", "cam-a"),)
    assert second[("streamseg_frames_read_total", a)] > first[("streamseg_frames_read_total", a)] > 0
    assert second[("streamseg_frames_written_total", a)] > first[("streamseg_frames_written_total", a)]
    assert ("streamseg_queue_depth", a) in second and ("streamseg_frames_dropped_total", a) in second
    count = second[("streamseg_latency_seconds_count", a)]
    buckets = [v for (name, labels), v in sorted(second.items(), key=lambda kv: float(dict(kv[0][1]).get("le", "inf")
                                                                                          .replace("+Inf", "inf")))
               if name == "streamseg_latency_seconds_bucket" and dict(labels)["source"] == "cam-a"]
    assert count == second[("streamseg_frames_written_total", a)] and buckets[-1] == count  # +Inf holds all
    assert buckets == sorted(buckets) and second[("streamseg_latency_seconds_sum", a)] > 0
    assert second[("streamseg_stage_frames_total", (("source", "cam-a"), ("stage", "inference")))] > 0
    assert second[("streamseg_batches_total", ())] > 0 and second[("streamseg_batch_size", ())] >= 1
    assert second[("streamseg_source_up", (("source", "cam-b"),))] == 0 and second[("streamseg_source_up", a)] == 1
    assert status == 503 and text == "unhealthy: cam-b: failed: source broke at 60\n"


def test_metrics_and_health_follow_the_token_rule():
    with PreviewServer("0", token="s3cret", stats=Snapshot) as server:
        for path in ("metrics", "healthz"):
            assert _get(server.url + path)[0] == 403
            assert _get(server.url + f"{path}?token=s3cret")[0] == 200
        assert "s3cret" not in _get(server.url + "metrics?token=s3cret")[1]
