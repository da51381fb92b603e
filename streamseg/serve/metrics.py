"""``/metrics`` (Prometheus text format, through prometheus-client) and ``/healthz`` for ``--serve``.

Both read the pipeline's live figures (:meth:`Pipeline.snapshot`) when asked: nothing is counted
twice, and a scrape costs the pipeline nothing. Counters are per source (label ``source``, the
source's description with any password or token removed; for a fleet, its name, and ``worker``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streamseg.pipeline.stats import LATENCY_BUCKETS, Snapshot, SourceFigures

CONTENT_TYPE = CONTENT_TYPE_LATEST
STALE_SECONDS = 10.0  # a running source that gave no frame for this long is not healthy


class _Collector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        sources = snap.sources
        # A fleet's driver (streamseg fleet) names the worker that runs each source: a second label.
        names = ["source", "worker"] if any(s.worker is not None for s in sources) else ["source"]

        def labels(s: SourceFigures, *more: str) -> list[str]:
            return [str(getattr(s, name) or "") for name in names] + list(more)

        def per_source(kind, name: str, doc: str, key: str):
            family = kind(f"streamseg_{name}", doc, labels=names)
            for s in sources:
                family.add_metric(labels(s), getattr(s, key) or 0)
            return family

        yield per_source(CounterMetricFamily, "frames_read", "Frames read from the source", "frames_read")
        yield per_source(CounterMetricFamily, "frames_inferred", "Frames the model segmented", "frames_inferred")
        yield per_source(CounterMetricFamily, "frames_written", "Frames drawn and written", "frames_written")
        yield per_source(CounterMetricFamily, "frames_dropped", "Frames dropped (oldest first) when inference fell "
                                                                "behind a live source", "frames_dropped")
        yield per_source(CounterMetricFamily, "reconnects", "Times a live stream came back after failing or ending",
                         "reconnects")
        yield per_source(CounterMetricFamily, "size_changes", "Times the source's picture size changed (frames "
                                                              "letterboxed to the size the outputs started with)",
                         "size_changes")
        yield per_source(CounterMetricFamily, "time_jumps", "Times the source's timestamps went back or leapt ahead "
                                                            "(carried on evenly)", "time_jumps")
        yield per_source(GaugeMetricFamily, "queue_depth", "Frames waiting for inference", "queue_depth")
        yield per_source(GaugeMetricFamily, "output_bytes", "Bytes written to the source's output files and streams",
                         "bytes_written")
        yield per_source(CounterMetricFamily, "publish_reconnects", "Times a published stream's server was reconnected",
                         "publish_reconnects")
        yield per_source(CounterMetricFamily, "publish_failures", "Times a published stream's connection failed, "
                                                                  "ended or stopped sending (then reconnected)",
                         "publish_failures")
        if any(s.restarts is not None for s in sources):
            yield per_source(CounterMetricFamily, "source_restarts", "Times a fleet source was started again (its "
                                                                      "worker lost, or its sources re-spread)", "restarts")
        healthy = GaugeMetricFamily("streamseg_source_up", "1 while the source is healthy (see /healthz)",
                                    labels=names)
        for s in sources:
            healthy.add_metric(labels(s), 0.0 if problem(s) else 1.0)
        yield healthy
        latency = HistogramMetricFamily("streamseg_latency_seconds", "Capture-to-output latency of written frames",
                                        labels=names)
        for s in sources:
            h = s.latency_histogram or {"buckets": [0] * len(LATENCY_BUCKETS), "count": 0, "sum": 0.0}
            buckets = [(repr(float(b)), n) for b, n in zip(LATENCY_BUCKETS, h["buckets"])]
            latency.add_metric(labels(s), [*buckets, ("+Inf", h["count"])], h["sum"])
        yield latency
        stage_seconds = CounterMetricFamily("streamseg_stage_seconds", "Seconds spent per stage",
                                            labels=[*names, "stage"])
        stage_items = CounterMetricFamily("streamseg_stage_frames", "Frames handled per stage",
                                          labels=[*names, "stage"])
        for s in sources:
            for stage, t in s.stages.items():
                stage_seconds.add_metric(labels(s, stage), t["seconds"])
                stage_items.add_metric(labels(s, stage), t["items"])
        yield stage_seconds
        yield stage_items
        yield GaugeMetricFamily("streamseg_batch_size", "Frames per forward now (live: the adaptive live batch)",
                                value=snap.batch_size)
        yield CounterMetricFamily("streamseg_batches", "Forwards run", value=snap.batches)


def metrics_text(snapshot: Callable[[], Snapshot]) -> bytes:
    """The Prometheus text exposition of the pipeline's figures now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)


def problem(source: SourceFigures) -> str | None:
    """Why a source is not healthy now, or ``None``: it failed, it is reconnecting, or it stopped giving frames."""
    if source.error:
        return f"failed: {source.error}"
    if not source.connected:
        return "reconnecting"
    age = source.last_read_age
    if not source.ended and age is not None and age > STALE_SECONDS:
        return f"no frame for {age:.0f} s"
    return None


def health(snapshot: Callable[[], Snapshot]) -> tuple[bool, str]:
    """``(True, "ok ...")`` while every source is healthy, else ``(False, text naming each one that is not)``."""
    sources = snapshot().sources
    bad = [f"{s.source}: {why}" for s in sources if (why := problem(s))]
    if bad:
        return False, "unhealthy: " + "; ".join(bad) + "\n"
    return True, f"ok: {len(sources)} source{'s' if len(sources) != 1 else ''} live\n"
