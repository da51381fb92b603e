"""The threaded pipeline: real threads, real sources and models, sinks that record what they get."""

import threading
import time

import pytest
from conftest import SAMPLE_CLIP
from fakes import FakeCapture, ListSource, RecordingSink, mean_segmenter, one_route

from streamseg.config import DropPolicy, ModelConfig, RenderConfig
from streamseg.errors import SourceError
from streamseg.models.segmenter import Segmenter
from streamseg.render.renderer import Renderer
from streamseg.sources.camera import CameraSource
from streamseg.sources.video import VideoSource


def test_slow_sink_in_lossless_mode_gets_every_frame_in_order():
    sink = RecordingSink(delay=0.002)
    stats = one_route(ListSource(200), mean_segmenter(), sink, batch_size=4, channel_size=2).run()
    assert [f.index for f in sink.frames] == list(range(200))
    assert [f.pts for f in sink.frames] == list(range(200))
    assert stats.frames_read == stats.frames_written == 200 and stats.frames_dropped == 0
    assert stats.completed and sink.finished and sink.close_calls == 1


def test_batches_fill_up_to_batch_size_for_files():
    seg = mean_segmenter()
    one_route(ListSource(40), seg, RecordingSink(), batch_size=8).run()
    assert seg.calls == [8] * 5


def test_drop_oldest_on_a_fast_live_source_drops_and_counts():
    sink = RecordingSink()
    stats = one_route(ListSource(300, live=True, interval=0.001), mean_segmenter(delay=0.02), sink,
                     batch_size=2, channel_size=2).run()
    assert stats.frames_dropped > 100
    assert stats.frames_written + stats.frames_dropped == stats.frames_read == 300
    indices = [f.index for f in sink.frames]
    assert indices == sorted(indices) and indices[-1] == 299  # the newest frame always survives


def test_live_batching_waits_at_most_one_frame_interval():
    seg = mean_segmenter()
    # A frame every 50 ms at a nominal 100 fps: a batch never waits 50 ms for a second frame.
    one_route(ListSource(10, live=True, interval=0.05, fps=100.0), seg, RecordingSink(), batch_size=8).run()
    assert max(seg.calls) == 1


def test_drop_policy_can_be_overridden_to_wait_on_a_live_source():
    stats = one_route(ListSource(100, live=True, interval=0.0005), mean_segmenter(delay=0.005),
                      RecordingSink(), batch_size=2, channel_size=2, drop_policy=DropPolicy.WAIT).run()
    assert stats.frames_dropped == 0 and stats.frames_written == 100


@pytest.mark.parametrize("where", ["source", "model", "sink"])
def test_a_failure_in_any_thread_raises_in_the_caller_quickly(where):
    src = ListSource(10_000, fail_at=50 if where == "source" else None)
    seg = mean_segmenter(fail_at=50 if where == "model" else None)
    sink = RecordingSink(fail_at=50 if where == "sink" else None)
    pipeline = one_route(src, seg, sink, batch_size=4)
    expected = {"source": (SourceError, "source broke at 50"), "model": (RuntimeError, "model exploded"),
                "sink": (OSError, "disk on fire")}[where]
    t0 = time.monotonic()
    with pytest.raises(expected[0], match=expected[1]):
        pipeline.run()
    assert time.monotonic() - t0 < 5
    assert sink.close_calls == 1 and not sink.finished
    # What was inferred before the failure was written, in order, and nothing after it.
    indices = [f.index for f in sink.frames]
    assert indices == list(range(len(indices))) and len(indices) <= 50 + pipeline.channels[0].maxsize + 4
    assert all(not t.is_alive() for t in threading.enumerate() if t.name.startswith("streamseg-"))


def test_request_stop_writes_every_frame_already_read():
    sink = RecordingSink(delay=0.001)
    src = ListSource(100_000, live=False)
    pipeline = one_route(src, mean_segmenter(), sink, batch_size=4)
    threading.Timer(0.3, pipeline.request_stop).start()
    stats = pipeline.run()
    assert not stats.completed and not sink.finished
    assert 0 < stats.frames_written == stats.frames_read < 100_000
    assert [f.index for f in sink.frames] == list(range(stats.frames_written))


def test_real_model_on_the_sample_clip(tiny_model):
    seg = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    sink = RecordingSink()
    with VideoSource(str(SAMPLE_CLIP)) as src:
        stats = one_route(src, seg.segment, sink, draw=Renderer(RenderConfig(), seg.id2label, seg.num_labels),
                          batch_size=3).run()
    assert stats.frames_written == 100 and stats.batches == 34
    assert sink.frames[10].seconds == pytest.approx(0.4)


def test_camera_frames_are_rgb_with_wall_clock_timestamps():
    sink = RecordingSink()
    with CameraSource(0, capture_factory=FakeCapture) as cam:
        assert cam.live and cam.fps == 30.0
        one_route(cam, mean_segmenter(), sink, batch_size=2).run()
    assert len(sink.frames) == 5
    times = [f.seconds for f in sink.frames]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:]))


def test_absent_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="camera 3 not found"):
        CameraSource(3, capture_factory=lambda i: FakeCapture(i, opened=False))
