"""Several sources in one process: one batched forward, each result back to its own output, a dead source alone."""

from __future__ import annotations

from fractions import Fraction

import pytest
from conftest import SAMPLE_CLIP, decode, run_cli, scene_frames, write_clip
from fakes import ListSource, RecordingSink, mean_segmenter, renderer

from streamseg.config import OutputConfig
from streamseg.errors import OutputError
from streamseg.outputs.exports import read_mask_png
from streamseg.outputs.plan import plan_routes, source_name
from streamseg.pipeline.pipeline import Pipeline, Route


def test_frames_of_all_sources_share_batches_and_return_to_their_own_sink():
    a, b = ListSource(30), ListSource(18)
    sink_a, sink_b = RecordingSink(), RecordingSink()
    seg = mean_segmenter()
    batches = []

    def segment(frames):
        batches.append([f.source for f in frames])
        return seg(frames)

    pipeline = Pipeline([Route(a, renderer(), sink_a), Route(b, renderer(), sink_b)], segment, batch_size=4)
    stats = pipeline.run()
    assert [f.index for f in sink_a.frames] == list(range(30))  # every frame, in order, in its own sink
    assert [f.index for f in sink_b.frames] == list(range(18))
    assert {f.source for f in sink_a.frames} == {0} and {f.source for f in sink_b.frames} == {1}
    assert sum(1 for sources in batches if set(sources) == {0, 1}) >= 4  # one forward serves both sources
    assert sink_a.finished and sink_b.finished and sink_a.close_calls >= 1 and sink_b.close_calls >= 1
    assert stats.frames_written == 48 and [r.stats.frames_written for r in pipeline.routes] == [30, 18]


def test_a_source_that_dies_does_not_stop_the_others():
    good, bad = ListSource(40, interval=0.002), ListSource(40, fail_at=7)
    sink_good, sink_bad = RecordingSink(), RecordingSink()
    pipeline = Pipeline([Route(good, renderer(), sink_good), Route(bad, renderer(), sink_bad)],
                              mean_segmenter(), batch_size=3)
    pipeline.run()  # no exception: the failure belongs to its route
    assert len(sink_good.frames) == 40 and pipeline.routes[0].error is None
    assert [f.index for f in sink_bad.frames] == list(range(7))  # what it gave before dying is kept
    assert "source broke at 7" in str(pipeline.routes[1].error)
    assert pipeline.snapshot().sources[1].error == "source broke at 7"


def test_output_names_never_collide(tmp_path):
    specs = ["a/clip.mp4", "b/clip.mp4", "rtsp://cam.local:554/live/1", "camera:0"]
    assert [source_name(s) for s in specs] == ["clip", "clip", "cam.local-554-live-1", "camera-0"]
    plans = plan_routes(specs, OutputConfig(output=tmp_path / "out"))
    assert [p.output.name for p in plans] == ["clip.mp4", "clip-1.mp4", "cam.local-554-live-1.mp4", "camera-0.mp4"]
    assert all(p.folders == (tmp_path / "out",) for p in plans)  # created when the outputs open
    assert not (tmp_path / "out").exists()
    pattern = plan_routes(specs[:2], OutputConfig(output=tmp_path / "seg-{index}-{name}.mkv"))
    assert [p.output.name for p in pattern] == ["seg-0-clip.mkv", "seg-1-clip-1.mkv"]
    with pytest.raises(OutputError, match="cannot share one file"):
        plan_routes(specs, OutputConfig(output=tmp_path / "one.mp4"))


def test_output_pattern_that_gives_two_inputs_one_file_is_refused(tmp_path):
    with pytest.raises(OutputError, match="gives several inputs the same file"):
        plan_routes(["a/clip.mp4", "b/clip.mp4"], OutputConfig(output=tmp_path / "{name:.1}.mp4"))  # "c" and "c"
    with pytest.raises(OutputError, match="use {name} and/or {index}"):
        plan_routes(["a.mp4", "b.mp4"], OutputConfig(output=tmp_path / "{camera}.mp4"))


def test_cli_with_two_files_writes_each_as_the_single_file_run_does(tiny_model, tmp_path):
    other = write_clip(tmp_path / "other.mp4", scene_frames(30, 160, 96), [2 * i for i in range(30)], Fraction(1, 50))
    out_dir = tmp_path / "out"
    proc = run_cli(str(SAMPLE_CLIP), str(other), "-o", str(out_dir), "--model", str(tiny_model), "-q",
                   "--batch-size", "4", "--masks", str(tmp_path / "masks"))
    assert proc.returncode == 0, proc.stderr
    assert "[street] frames read 100, written 100" in proc.stderr
    assert "[other] frames read 30, written 30" in proc.stderr
    assert "all 2 sources: frames read 130, written 130" in proc.stderr
    for name, src in (("street", SAMPLE_CLIP), ("other", other)):
        single = tmp_path / f"single-{name}.mp4"
        assert run_cli(str(src), "-o", str(single), "--model", str(tiny_model), "-q",
                       "--masks", str(tmp_path / f"single-masks-{name}")).returncode == 0
        frames, times = decode(out_dir / f"{name}.mp4")
        ref_frames, ref_times = decode(single)
        assert times == ref_times and len(frames) == len(ref_frames)  # the same timing, frame for frame
        mine = sorted((tmp_path / "masks" / name).glob("*.png"))
        ref = sorted((tmp_path / f"single-masks-{name}").glob("*.png"))
        assert len(mine) == len(ref) == len(frames)
        agree = [(read_mask_png(a) == read_mask_png(b)).mean() for a, b in zip(mine, ref)]
        assert min(agree) > 0.999  # the same labels (batch composition may flip a rare tie)


def test_cli_a_missing_input_among_several_is_reported_and_the_rest_run(tiny_model, tmp_path):
    proc = run_cli(str(SAMPLE_CLIP), str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "{name}-seg.mp4"),
                   "--model", str(tiny_model), "-q")
    assert proc.returncode == 1
    assert f"streamseg: error: no such file or folder: {tmp_path / 'nope.mp4'}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(decode(tmp_path / "street-seg.mp4")[0]) == 100
