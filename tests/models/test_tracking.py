"""Track IDs: kept while an object is seen, through missed frames, never reused; in --json, --labels and --masks."""

from __future__ import annotations

import json

import numpy as np
from conftest import SAMPLE_CLIP, run_cli

from streamseg.models.tracking import SegmentTracker
from streamseg.outputs.exports import read_mask_png
from streamseg.testing.scenes import StreetScene

PERSON, CAR = 5, 6


def frame_of(boxes: dict[int, tuple[int, int, int, int, int]], shape=(120, 200)):
    """A segment map and its infos from ``{segment id: (label, x, y, w, h)}``."""
    seg = np.full(shape, -1, np.int32)
    for seg_id, (_, x, y, w, h) in boxes.items():
        seg[y:y + h, x:x + w] = seg_id
    return seg, tuple((seg_id, label, 0.9) for seg_id, (label, *_) in boxes.items())


def test_ids_follow_moving_objects_and_do_not_depend_on_the_models_segment_numbers():
    tracker = SegmentTracker()
    seen = []
    for t in range(20):
        # the model numbers its segments anew each frame (here: swapped every other frame)
        a, b = (0, 1) if t % 2 else (1, 0)
        seg, infos = frame_of({a: (PERSON, 10 + 2 * t, 20, 20, 40), b: (CAR, 150 - 2 * t, 60, 40, 20)})
        ids = tracker(seg, infos)
        seen.append((ids[a], ids[b]))
    assert set(seen) == {(1, 2)}  # the person is 1 and the car 2 in every frame


def test_a_missed_object_keeps_its_id_within_the_buffer_and_ids_are_never_reused():
    tracker = SegmentTracker(buffer=5)
    person = {0: (PERSON, 50, 20, 20, 40)}
    assert tracker(*frame_of(person)) == {0: 1}
    for _ in range(4):  # four frames without it (a missed detection, an occlusion)
        assert tracker(*frame_of({})) == {}
    assert tracker(*frame_of(person)) == {0: 1}  # the same object, the same id
    for _ in range(7):  # gone for longer than the buffer: its id is retired
        tracker(*frame_of({}))
    assert tracker(*frame_of(person)) == {0: 2}
    car = {0: (CAR, 50, 20, 20, 40)}  # same place, another class: another object
    assert tracker(*frame_of(car)) == {0: 3}


def test_the_assignment_is_optimal_not_greedy():
    """Greedy matching gives the best single pair and strands the other track; the assignment keeps both."""
    tracker = SegmentTracker(min_iou=0.2, stride=1)
    tracker(*frame_of({0: (PERSON, 0, 0, 40, 40), 1: (PERSON, 40, 0, 40, 40)}))  # tracks 1 (x 0..40), 2 (x 40..80)
    # segment 7 (x 16..56): IoU 0.43 with track 1, 0.25 with track 2; segment 8 (x 0..16): IoU 0.4 with track 1.
    # Greedy takes the best pair (1, 7) and leaves 8 a new id; the best assignment is 1 -> 8, 2 -> 7.
    ids = tracker(*frame_of({8: (PERSON, 0, 0, 16, 40), 7: (PERSON, 16, 0, 40, 40)}))
    assert ids == {7: 2, 8: 1}, ids


def test_tracks_on_true_instance_masks_of_a_generated_street_stay_whole():
    scene = StreetScene(500, 320, 180)
    tracker = SegmentTracker()
    by_object: dict[tuple, set[int]] = {}
    for f in range(40):
        _, _, inst, identities = scene.render_instances(float(f), noise=0)
        present = [k for k in identities if (inst == k).any()]
        ids = tracker(inst, tuple((k, identities[k][2], 1.0) for k in present))
        for k in present:
            by_object.setdefault(identities[k][:2], set()).add(ids[k])
    assert by_object and all(len(tracks) == 1 for tracks in by_object.values()), by_object
    all_ids = [next(iter(t)) for t in by_object.values()]
    assert len(set(all_ids)) == len(all_ids)  # one id per object, none shared


def test_track_ids_reach_json_masks_and_labels(tiny_mask2former, tmp_path):
    out, masks, js = tmp_path / "o.mp4", tmp_path / "m", tmp_path / "s.jsonl"
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_mask2former), "-o", str(out), "--json", str(js), "--masks",
                   str(masks), "--masks-by", "track", "--labels", "--duration", "0.4", "--track-buffer", "10", "-q")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in js.read_text().splitlines()]
    assert len(records) == 10 and any(r["segments"] for r in records)
    used = set()
    for record in records:
        tracks = [s["track_id"] for s in record["segments"]]
        assert len(set(tracks)) == len(tracks) and all(t >= 1 for t in tracks)  # one id per segment in a frame
        ids = read_mask_png(masks / f"{record['frame']:06d}.png")
        visible = {s["track_id"] for s in record["segments"] if s["area"] > 0}
        assert set(np.unique(ids[ids >= 0]).tolist()) == visible  # the PNG holds track ids, not segment ids
        used |= set(tracks)
    assert used == set(range(1, max(used) + 1))  # ids count up from 1: none skipped, none reused
