"""Real time on small machines: bounded live queues, an adaptive live batch, the thread budget, and the knobs that
trade accuracy for speed (--size, --infer-every). No timing is asserted here except where the promise is one
(failing fast without the Hub); speed lives in benchmarks/."""

from __future__ import annotations

import time

import numpy as np
import torch
from conftest import SAMPLE_CLIP, decode
from fakes import ListSource, RecordingSink, one_route

from streamseg.cli import main
from streamseg.config import ModelConfig
from streamseg.frames import Frame, SegmentationResult
from streamseg.models.segmenter import Segmenter
from streamseg.outputs.exports import read_mask_png
from streamseg.pipeline.schedule import EveryNth
from streamseg.pipeline.threads import ThreadTuner, plan


def per_frame_model(seconds_per_frame):
    """A stand-in model that takes ``seconds_per_frame(frames_so_far)`` for each frame it is given."""
    seen = []

    def segment(frames):
        for f in frames:
            time.sleep(seconds_per_frame(len(seen)))
            seen.append(f.index)
        return [SegmentationResult(frame=f, label_map=np.zeros(f.image.shape[:2], np.uint8)) for f in frames]

    segment.seen = seen
    return segment


def test_a_live_queue_never_holds_more_than_the_batch_being_formed():
    """A fast camera (1 ms a frame) behind a slow model (30 ms a frame): the freshest frames wait, no backlog."""
    source = ListSource(600, live=True, interval=0.001, fps=1000.0)
    pipeline = one_route(source, per_frame_model(lambda n: 0.03), RecordingSink(), batch_size=8, max_latency=1.0)
    stats = pipeline.run()
    largest = max([1, *pipeline.live_batches])
    assert pipeline.channels[0].high_water <= largest
    assert stats.frames_read == stats.frames_written + stats.frames_dropped == 600
    assert stats.frames_dropped > 400  # the camera outran the model: old frames went, counted


def per_batch_model(seconds_per_batch):
    """A stand-in model that takes ``seconds_per_batch(frames in this batch, frames so far)`` for each batch."""
    seen, sizes = [], []

    def segment(frames):
        time.sleep(seconds_per_batch(len(frames), len(seen)))
        seen.extend(f.index for f in frames)
        sizes.append(len(frames))
        return [SegmentationResult(frame=f, label_map=np.zeros(f.image.shape[:2], np.uint8)) for f in frames]

    segment.sizes = sizes
    return segment


def test_the_live_batch_grows_while_batching_pays_and_shrinks_when_the_model_slows_down():
    """As on a GPU: a batch costs little more than one frame, so it grows; then each frame costs 250 ms."""
    slow_after = 300
    model = per_batch_model(lambda n, done: 0.01 + 0.001 * n if done < slow_after else 0.25 * n)
    source = ListSource(5000, live=True, interval=0.002, fps=500.0)
    pipeline = one_route(source, model, RecordingSink(), batch_size=8, max_latency=0.4)
    pipeline.run()
    sizes = pipeline.live_batches
    assert max(sizes) >= 4  # batching paid: batches grew
    peak = sizes.index(max(sizes))
    assert sizes[-1] == 1 and sizes[peak:][-1] < max(sizes)  # slow model: back down to single frames
    settled = list(pipeline.routes[0].stats.latency_ms)[-3:]  # single slow frames: about two model times
    assert max(settled) < 800, settled


def test_a_live_batch_that_does_not_pay_goes_back_to_one_frame():
    """As on a CPU: every frame costs its 20 ms whatever the batch, so a larger batch only adds latency."""
    model = per_batch_model(lambda n, done: 0.02 * n)
    source = ListSource(1200, live=True, interval=0.004, fps=250.0)
    pipeline = one_route(source, model, RecordingSink(), batch_size=8, max_latency=1.0)
    pipeline.run()
    assert pipeline.live_batches[:2] == [2, 1] and pipeline.live_batch == 1  # tried 2, went back
    assert max(model.sizes) == 2 and model.sizes.count(1) >= 0.9 * len(model.sizes)  # retried rarely


def test_a_model_that_keeps_up_with_the_source_stays_at_one_frame_per_batch():
    """5 ms a frame behind a 100 fps source: waiting for a second frame would only add latency."""
    model = per_batch_model(lambda n, done: 0.001 + 0.004 * n)  # batching would pay, but nothing to catch up
    source = ListSource(300, live=True, interval=0.01, fps=100.0)
    pipeline = one_route(source, model, RecordingSink(), batch_size=8, max_latency=1.0)
    stats = pipeline.run()
    assert pipeline.live_batches == [] and set(model.sizes) == {1}
    # the live queue holds the one frame being formed: a hiccup of more than 10 ms on busy cores drops one, counted
    assert stats.frames_written + stats.frames_dropped == 300 and stats.frames_dropped <= 10, stats


def test_files_keep_their_batch_size_and_every_frame():
    model = per_frame_model(lambda n: 0.0)
    calls = []

    def segment(frames):
        calls.append(len(frames))
        return model(frames)

    sink = RecordingSink()
    stats = one_route(ListSource(40), segment, sink, batch_size=8).run()
    assert calls == [8] * 5 and stats.frames_written == 40 and stats.frames_dropped == 0


def test_size_changes_what_the_model_sees_and_not_the_output(tiny_model, tmp_path):
    image = np.zeros((360, 640, 3), np.uint8)
    default = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    exact = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu", size=(96, 48)))
    short = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu", size=40))
    assert default.preprocess([image]).shape == (1, 3, 64, 64)  # the processor's own 64x64
    assert exact.preprocess([image]).shape == (1, 3, 48, 96)
    assert short.preprocess([image]).shape == (1, 3, 40, 71)  # shortest edge 40, aspect kept
    assert exact([image])[0].shape == (360, 640)  # labels at the source's size
    out, masks = tmp_path / "o.mp4", tmp_path / "m"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--masks", str(masks), "--model", str(tiny_model), "-q",
                 "--size", "96x48", "--duration", "0.4"]) == 0
    frames, _ = decode(out)
    assert len(frames) == 10 and frames[0].shape == (360, 640, 3)
    assert read_mask_png(masks / "000000.png").shape == (360, 640)


def test_infer_every_3_writes_every_frame_and_runs_the_model_on_a_third(tiny_model, tmp_path, monkeypatch):
    given = []
    original = Segmenter.segment

    def counting(self, frames):
        given.extend(f.index for f in frames)
        return original(self, frames)

    monkeypatch.setattr(Segmenter, "segment", counting)
    out, masks = tmp_path / "o.mp4", tmp_path / "m"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--masks", str(masks), "--model", str(tiny_model), "-q",
                 "--infer-every", "3", "--batch-size", "4"]) == 0
    assert given == list(range(0, 100, 3))  # 34 of 100 frames went through the model
    assert len(decode(out)[0]) == 100
    pngs = sorted(masks.iterdir())
    assert len(pngs) == 100
    first, between = read_mask_png(pngs[3]), read_mask_png(pngs[4])
    assert np.array_equal(first, between) and np.array_equal(first, read_mask_png(pngs[5]))  # reused labels


def test_infer_every_segments_each_source_on_its_own_and_any_new_size():
    seen = []

    def segment(frames):
        seen.extend((f.source, f.index) for f in frames)
        return [SegmentationResult(frame=f, label_map=np.full(f.image.shape[:2], f.index, np.int32)) for f in frames]

    every = EveryNth(segment, 2)
    small, large = np.zeros((4, 4, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)
    frames = [Frame(index=0, image=small, source=0), Frame(index=0, image=small, source=1),
              Frame(index=1, image=small, source=0), Frame(index=1, image=large, source=1),
              Frame(index=2, image=small, source=0), Frame(index=3, image=small, source=0)]
    results = every(frames)
    assert seen == [(0, 0), (1, 0), (1, 1), (0, 2)]  # source 1's second frame has a new size: segmented
    assert [int(r.label_map[0, 0]) for r in results] == [0, 0, 0, 1, 2, 2]
    assert [r.frame.index for r in results] == [0, 0, 1, 1, 2, 3]


def test_threads_reach_torch_and_the_summary_says_what_was_chosen(tiny_model, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main([str(SAMPLE_CLIP), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model), "-q",
                     "--threads", "1", "--duration", "0.2"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    summary = capsys.readouterr().err.splitlines()[0]
    assert summary.endswith(f"; threads: forward 1, decode auto, encode auto, opencv 1 of {plan().cores} cores")


def test_the_tuner_takes_fewer_threads_when_they_are_faster_and_keeps_all_when_not():
    """A stand-in forward whose time per frame depends on torch's thread count, as a busy neighbour makes it."""
    before = torch.get_num_threads()

    def model(fast_with: int):
        def segment(frames):
            time.sleep((0.002 if torch.get_num_threads() == fast_with else 0.006) * len(frames))
            return list(frames)
        return segment

    try:
        loaded = ThreadTuner(model(fast_with=1), (2, 1), warm_seconds=0)
        for _ in range(40):
            loaded([object()] * 2)
        assert loaded.current == 1 and loaded.switches == 1 and torch.get_num_threads() == 1
        idle = ThreadTuner(model(fast_with=2), (2, 1), warm_seconds=0)
        for _ in range(60):
            idle([object()] * 2)
        assert idle.current == 2 and idle.switches == 0
        assert idle.frames_at[1] <= 0.15 * idle.frames_at[2]  # probes are rare once nothing changes
        assert "tuned between 2 and 1" in idle.describe()
    finally:
        torch.set_num_threads(before)


def test_the_budget_gives_the_forward_every_core_and_the_rest_a_share():
    assert plan(cores=2) == plan(cores=2, forward=None)
    small, large = plan(cores=2), plan(cores=16)
    assert (small.forward, small.decode, small.encode, small.opencv) == (2, 0, 0, 1)  # 0: FFmpeg's own pools
    assert (large.forward, large.decode, large.encode, large.opencv) == (16, 0, 0, 4)
    assert plan(3, cores=16).forward == 3 and plan(3, cores=16).tuned_counts is None  # chosen: not tuned
    assert small.tuned_counts == (2, 1) and plan(cores=1).tuned_counts is None
    assert not plan(cores=2, managed=False).managed


def test_a_hub_id_without_the_hub_fails_within_seconds_in_one_line(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.monotonic()
    assert main([str(SAMPLE_CLIP), "--model", "nvidia/segformer-b0-finetuned-ade-512-512", "-o",
                 str(tmp_path / "o.mp4"), "-q"]) == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamseg: error: model 'nvidia/segformer-b0-finetuned-ade-512-512' not found: it is not in the "
                   "local cache and the Hugging Face Hub cannot be reached (127.0.0.1: Connection refused); pass a "
                   "local folder with --model PATH"]
