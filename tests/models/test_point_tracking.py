"""Click to track with a SAM 2 video model: streaming sessions, pruned to bounded memory with identical masks, one
encoder pass for every source, clicks that add and remove objects, and one-line errors for bad points."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import cli_process, run_cli

from streamseg.cli import main as cli_main
from streamseg.config import ModelConfig
from streamseg.frames import Frame
from streamseg.models.heads.point_tracking import session_bytes
from streamseg.models.segmenter import Segmenter
from streamseg.testing.scenes import StreetScene

POINTS = ((40.0, 60.0), (120.0, 30.0))


def street(n: int, seed: int = 5, source: int = 0) -> list[Frame]:
    scene = StreetScene(seed, 160, 96)
    return [Frame(image=scene.render(t)[0], index=t, source=source) for t in range(n)]


def run(segmenter: Segmenter, frames: list[Frame], batch: int = 4, sizes: dict | None = None) -> list:
    results = []
    for i in range(0, len(frames), batch):
        results += segmenter.segment(frames[i:i + batch])
        if sizes is not None:
            sizes[len(results)] = session_bytes(segmenter.head._streams[0].session)
    return results


def test_pruned_and_unpruned_sessions_give_identical_masks_and_pruned_memory_stops_growing(tiny_sam2):
    frames = street(40)
    pruned = Segmenter.load(ModelConfig(name=str(tiny_sam2), device="cpu", points=POINTS))
    full = Segmenter.load(ModelConfig(name=str(tiny_sam2), device="cpu", points=POINTS))
    full.head.prune = False
    kept, grown = {}, {}
    a, b = run(pruned, frames, sizes=kept), run(full, frames, sizes=grown)
    for ra, rb in zip(a, b):
        assert ra.track_ids == rb.track_ids == (1, 2)
        assert np.array_equal(ra.segment_map, rb.segment_map), ra.frame.index
    assert all(len(r.segments()) == 2 and min(s.area for s in r.segments()) > 100 for r in a)  # two real masks
    window = pruned.head.keep  # the frames the model reads back: memories and object pointers
    assert window == 15
    assert kept[20] == kept[28] == kept[40]  # past the window, a pruned session holds the same bytes
    assert grown[40] > grown[28] > grown[20] and grown[40] > 1.5 * kept[40]  # an unpruned one keeps every frame
    session = pruned.head._streams[0].session
    assert list(session.processed_frames) == [39] and len(session.output_dict_per_obj[0]["non_cond_frame_outputs"]) == window
    assert list(session.output_dict_per_obj[0]["cond_frame_outputs"]) == [0]  # the clicked frame stays


def test_sources_share_one_encoder_pass_and_keep_their_own_objects(tiny_sam2):
    seg = Segmenter.load(ModelConfig(name=str(tiny_sam2), device="cpu", points=POINTS[:1]))
    calls = []
    seg.head.model.vision_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    left, right = street(6, seed=5, source=0), street(6, seed=9, source=1)
    results = run(seg, [f for pair in zip(left, right) for f in pair])  # 12 frames, 2 sources, batches of 4
    assert calls == [4, 4, 4]  # the encoder once per batch, on both sources' frames together
    assert {r.track_ids for r in results if r.frame.source == 0} == {(1,)}
    assert {r.track_ids for r in results if r.frame.source == 1} == {(2,)}  # its own session, its own object
    alone = Segmenter.load(ModelConfig(name=str(tiny_sam2), device="cpu", points=POINTS[:1]))
    solo = run(alone, right)
    together = [r for r in results if r.frame.source == 1]
    for r1, r2 in zip(solo, together):  # a source batched with another gives its own masks (up to float noise)
        assert (r1.segment_map == r2.segment_map).mean() > 0.999


def test_clicks_add_an_object_and_a_right_click_removes_the_one_under_it(tiny_sam2):
    seg = Segmenter.load(ModelConfig(name=str(tiny_sam2), device="cpu", points=POINTS[:1]))
    frames = street(12)
    first = run(seg, frames[:4])
    assert first[-1].track_ids == (1,)
    seg.head.add_point(120, 30)  # from the live view's thread
    second = run(seg, frames[4:8])
    assert second[0].track_ids == (1, 2) and len(second[-1].segments()) == 2
    ys, xs = np.nonzero(second[-1].segment_map == 0)  # a pixel of object 1
    seg.head.remove_point(float(xs[0]), float(ys[0]))
    third = run(seg, frames[8:])
    assert all(r.track_ids == (2,) for r in third)
    with pytest.raises(Exception, match="outside the 160x96 frame"):
        seg.head.add_point(500, 10)


def test_the_cli_tracks_points_into_json_and_bad_points_are_one_line(tiny_sam2, tiny_model, tmp_path, capsys):
    from conftest import SAMPLE_CLIP

    jsonl = tmp_path / "t.jsonl"
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_sam2), "--point", "100,100", "--point", "500,200",
                   "-o", str(tmp_path / "t.mp4"), "--json", str(jsonl), "--duration", "0.6", "--labels", "-q")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 15
    assert all(sorted(s["track_id"] for s in r["segments"]) == [1, 2] for r in records)
    assert {s["label"] for r in records for s in r["segments"]} == {"object"}
    cases = [
        (["--model", str(tiny_sam2), "--point", "5000,10"], "--point 5000,10 is outside the"),
        (["--model", str(tiny_sam2), "--point", "12"], "invalid --point '12'"),
        (["--model", str(tiny_model), "--point", "10,10"], "--point needs a model that tracks what it is shown"),
        (["--model", str(tiny_sam2), "--prompt", "dog"], "--prompt needs a model that takes text"),
    ]
    for args, message in cases:  # in this process (the CLI's main): an interpreter per case would cost 25 s
        capsys.readouterr()
        code = cli_main([str(SAMPLE_CLIP), *args, "-o", str(tmp_path / "x.mp4"), "--duration", "0.2", "-q"])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("streamseg:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], lines
        assert not (tmp_path / "x.mp4").exists()


def test_a_click_on_the_live_view_starts_tracking_while_the_run_goes(tiny_sam2, tmp_path):
    from streamseg.testing.streams import SyntheticStreams

    jsonl = tmp_path / "live.jsonl"
    with SyntheticStreams(1, fps=10) as cams, cli_process(
            cams.urls[0], "--model", str(tiny_sam2), "--serve", "127.0.0.1:0", "--json", str(jsonl),
            "--no-display", "-q") as proc:
        line = proc.stderr.readline()
        while line and not line.startswith("streamseg: live view:"):
            line = proc.stderr.readline()
        base = re.search(r"(http://[\d.:]+/)", line).group(1)
        assert "click an object to track it" in urllib.request.urlopen(base, timeout=5).read().decode()

        def post(body: dict) -> int:
            request = urllib.request.Request(f"{base}point", data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                return urllib.request.urlopen(request, timeout=5).status
            except urllib.error.HTTPError as exc:
                return exc.code

        deadline = time.monotonic() + 30
        while not (jsonl.exists() and jsonl.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert post({"x": 5000, "y": 1}) == 400 and post({"x": 1, "y": 1, "source": 3}) == 400
        assert post({"x": 80, "y": 40}) == 200
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    tracks = [[s["track_id"] for s in json.loads(line)["segments"]] for line in jsonl.read_text().splitlines()]
    first = next(k for k, t in enumerate(tracks) if t)
    assert first > 0 and all(not t for t in tracks[:first])  # nothing before the click
    assert all(t == [1] for t in tracks[first:])  # the clicked object, from then on
