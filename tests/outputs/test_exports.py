"""--json (JSON Lines, COCO RLE) and --masks (PNG label maps): parsed back and checked against the masks."""

import json

import numpy as np
import pytest
from conftest import SAMPLE_CLIP, SAMPLE_IMAGE, decode

from streamseg.cli import main
from streamseg.config import ModelConfig
from streamseg.models.segmenter import Segmenter
from streamseg.outputs.exports import read_mask_png, rle_encode
from streamseg.render.renderer import palette
from streamseg.testing.scenes import CLASSES


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((37, 53)) > 0.5,
             np.pad(np.ones((40, 60), bool), 30), rng.random((1, 1)) > 2]
    for m in cases:
        theirs = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = rle_encode(m)
        assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])
        assert np.array_equal(mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)


def test_json_lines_and_mask_pngs_match_each_other_and_the_model(demo_model, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    jsonl, masks = tmp_path / "seg.jsonl", tmp_path / "masks"
    assert main([str(SAMPLE_CLIP), "-o", str(tmp_path / "o.mp4"), "--model", str(demo_model), "-q",
                 "--json", str(jsonl), "--json-masks", "--masks", str(masks)]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    _, times = decode(SAMPLE_CLIP)
    assert [r["frame"] for r in records] == list(range(100))
    assert [r["pts"] for r in records] == pytest.approx(times)
    assert sorted(p.name for p in masks.iterdir()) == [f"{i:06d}.png" for i in range(100)]

    seg = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu"))
    frames, _ = decode(SAMPLE_CLIP)
    for i in (0, 42, 99):
        expected = seg([frames[i]])[0]
        label_map = read_mask_png(masks / f"{i:06d}.png")
        assert np.array_equal(label_map, expected)  # the PNG round-trips the label map exactly
        for s in records[i]["segments"]:
            m = mask_api.decode({"size": s["rle"]["size"], "counts": s["rle"]["counts"].encode()}).astype(bool)
            assert np.array_equal(m, label_map == s["id"])
            ys, xs = np.nonzero(m)
            assert s["area"] == m.sum() and s["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert s["label"] == CLASSES[s["label_id"]] and s["score"] is None


def test_mask_png_carries_the_class_palette(demo_model, tmp_path):
    from PIL import Image

    masks = tmp_path / "m"
    assert main([str(SAMPLE_IMAGE), "-o", str(tmp_path / "o.png"), "--model", str(demo_model), "-q",
                 "--masks", str(masks)]) == 0
    with Image.open(masks / "000000.png") as im:
        assert im.mode == "P"
        pal = np.array(im.getpalette()[:21], np.uint8).reshape(7, 3)
    assert np.array_equal(pal, palette(7))


def test_panoptic_exports_hold_segment_ids_with_scores(tiny_mask2former, tmp_path):
    jsonl, masks = tmp_path / "p.jsonl", tmp_path / "pm"
    assert main([str(SAMPLE_IMAGE), "-o", str(tmp_path / "o.png"), "--model", str(tiny_mask2former), "-q",
                 "--json", str(jsonl), "--masks", str(masks)]) == 0
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    ids = read_mask_png(masks / "000000.png")
    assert record["task"] == "panoptic" and len(record["segments"]) == 3
    for s in record["segments"]:
        assert s["area"] == (ids == s["id"]).sum() and 0.9 < s["score"] <= 1.0
    assert "rle" not in record["segments"][0]


def test_a_failed_run_keeps_what_it_exported(demo_model, tmp_path, monkeypatch):
    """Exports are written as the run goes: a run that fails midway keeps every record up to the failure."""
    original = Segmenter.segment

    def fails_at_frame_60(self, frames):
        if any(f.index >= 60 for f in frames):
            raise RuntimeError("device lost")
        return original(self, frames)

    monkeypatch.setattr(Segmenter, "segment", fails_at_frame_60)
    jsonl, out = tmp_path / "part.jsonl", tmp_path / "o.mp4"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--model", str(demo_model), "-q", "--batch-size", "4",
                 "--json", str(jsonl)]) == 1
    lines = jsonl.read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == list(range(60))
    assert len(decode(out)[0]) == 60  # and the video holds the same frames, playable


def test_json_masks_needs_json(capsys):
    assert main([str(SAMPLE_IMAGE), "--json-masks", "--no-display", "-q"]) == 2
    assert "--json-masks needs --json PATH" in capsys.readouterr().err
