"""Semantic, instance and panoptic models: streamseg's segments equal what transformers' pipeline returns."""

import numpy as np
import pytest
from conftest import SAMPLE_CLIP, SAMPLE_IMAGE, decode
from PIL import Image

from streamseg.cli import main
from streamseg.config import ModelConfig, Task
from streamseg.errors import ModelLoadError
from streamseg.frames import Frame
from streamseg.models.segmenter import Segmenter


def _compare_with_pipeline(model_dir, task, **thresholds):
    from transformers import pipeline

    image = Image.open(SAMPLE_IMAGE).convert("RGB")
    theirs = pipeline("image-segmentation", model=str(model_dir))(image, subtask=task, **thresholds)
    seg = Segmenter.load(ModelConfig(name=str(model_dir), device="cpu", engine="torch", task=task, **thresholds))
    (result,) = seg.segment([Frame(index=0, image=np.asarray(image))])
    ours = result.segments()
    assert len(theirs) > 0, "the fixture must give segments, or the comparison proves nothing"
    assert [s.label for s in ours] == [t["label"] for t in theirs]
    ids = result.segment_map if result.segment_map is not None else result.label_map
    for s, t in zip(ours, theirs):
        if t["score"] is None:
            assert s.score is None
        else:
            assert s.score == pytest.approx(t["score"], abs=1e-3)
        a, b = np.asarray(t["mask"]) > 0, ids == s.id
        iou = (a & b).sum() / (a | b).sum()
        assert iou >= 0.95, f"{s.label}: mask IoU {iou:.3f}"
        assert s.area == b.sum()
    return result


def test_semantic_equals_the_pipeline(demo_model):
    result = _compare_with_pipeline(demo_model, "semantic")
    assert result.task == "semantic" and len(result.segments()) == 7


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_detr_equals_the_pipeline(tiny_detr, task):
    _compare_with_pipeline(tiny_detr, task)


def test_mask2former_panoptic_equals_the_pipeline(tiny_mask2former):
    result = _compare_with_pipeline(tiny_mask2former, "panoptic")
    assert len(result.segments()) == 3


def test_mask2former_instance_equals_the_pipeline(tiny_mask2former):
    # Instance scores multiply the class score by the mean mask probability; at the default 0.9 the
    # random-weight model has no instance, so both sides are compared at 0.5.
    _compare_with_pipeline(tiny_mask2former, "instance", threshold=0.5)


def test_auto_task_is_panoptic_first_and_unsupported_tasks_are_refused(tiny_mask2former, demo_model):
    assert Segmenter.load(ModelConfig(name=str(tiny_mask2former), device="cpu")).task is Task.PANOPTIC
    assert Segmenter.load(ModelConfig(name=str(demo_model), device="cpu")).task is Task.SEMANTIC
    with pytest.raises(ModelLoadError, match="cannot do panoptic segmentation; it can do: semantic"):
        Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", task=Task.PANOPTIC))


def _segments(model_dir, **kw):
    seg = Segmenter.load(ModelConfig(name=str(model_dir), device="cpu", engine="torch", task=Task.PANOPTIC, **kw))
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    return [(s.label, round(s.score, 3), s.area) for s in seg.segment([Frame(index=0, image=image)])[0].segments()]


@pytest.mark.parametrize("flag, value", [("threshold", 0.995), ("mask_threshold", 0.9), ("overlap_threshold", 0.99)])
def test_each_threshold_changes_the_segments(tiny_mask2former, flag, value):
    default = _segments(tiny_mask2former)
    changed = _segments(tiny_mask2former, **{flag: value})
    assert len(default) == 3 and changed != default


def test_threshold_flags_reach_the_cli(tiny_mask2former, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main([str(SAMPLE_IMAGE), "-o", str(out), "--model", str(tiny_mask2former), "-q"]) == 0
    default = capsys.readouterr().out
    assert main([str(SAMPLE_IMAGE), "-o", str(out), "--model", str(tiny_mask2former), "-q", "--threshold", "0.995"]) == 0
    stricter = capsys.readouterr().out
    assert default.splitlines() == ["Segmented parts:", "\u2022 thing3 (score: 0.999)", "\u2022 thing2 (score: 0.993)",
                                    "\u2022 thing2 (score: 0.997)"]
    assert stricter.splitlines() == ["Segmented parts:", "\u2022 thing3 (score: 0.999)", "\u2022 thing2 (score: 0.997)"]


def test_semantic_image_prints_its_parts(demo_model, tmp_path, capsys):
    assert main([str(SAMPLE_IMAGE), "-o", str(tmp_path / "o.png"), "--model", str(demo_model), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Segmented parts:" and "\u2022 person (score: N/A)" in lines and len(lines) == 8


def test_panoptic_leaves_unsegmented_pixels_untouched(tiny_detr, tmp_path):
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    found, none = tmp_path / "found.png", tmp_path / "none.png"
    assert main([str(SAMPLE_IMAGE), "-o", str(found), "--model", str(tiny_detr), "-q"]) == 0
    assert main([str(SAMPLE_IMAGE), "-o", str(none), "--model", str(tiny_detr), "--threshold", "0.95", "-q"]) == 0
    # At 0.9 one segment (obj4, score 0.917) covers the picture and is blended; at 0.95 there is none.
    assert np.abs(np.asarray(Image.open(found)).astype(int) - image).mean() > 10
    assert np.array_equal(np.asarray(Image.open(none)), image)


def test_panoptic_video_end_to_end(tiny_mask2former, tmp_path):
    out = tmp_path / "pan.mp4"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_mask2former), "--legend", "-q"]) == 0
    frames, times = decode(out)
    assert len(frames) == 100 and times == pytest.approx(decode(SAMPLE_CLIP)[1])


def _torchvision_resize_stand_in(monkeypatch):
    """transformers' PIL OneFormer processor calls torchvision (tvF.resize) without importing it when
    torchvision is absent (as on this machine). For the *reference* side only, give that module the
    bilinear resize it expects, so that the pipeline can run."""
    import torch.nn.functional as F
    from transformers.models.oneformer import image_processing_pil_oneformer as module

    class _TvF:
        class InterpolationMode:
            BILINEAR = "bilinear"

        @staticmethod
        def resize(t, size, interpolation=None, **_):
            if t.dim() == 3:
                return F.interpolate(t[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)

    if not hasattr(module, "tvF"):
        monkeypatch.setattr(module, "tvF", _TvF, raising=False)


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_oneformer_with_its_task_input_equals_the_pipeline(tiny_oneformer, task, monkeypatch):
    seg = Segmenter.load(ModelConfig(name=str(tiny_oneformer), device="cpu", engine="torch", task=task))
    assert seg.head.task_inputs is not None and seg.head.task_inputs.shape == (1, 16)
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    (ours,) = seg.segment([Frame(index=0, image=image)])  # before the stand-in: streamseg needs no torchvision
    _torchvision_resize_stand_in(monkeypatch)
    from transformers import pipeline

    theirs = pipeline("image-segmentation", model=str(tiny_oneformer))(Image.fromarray(image), subtask=task)
    assert len(theirs) > 0
    segments = ours.segments()
    assert [s.label for s in segments] == [t["label"] for t in theirs]
    ids = ours.segment_map if ours.segment_map is not None else ours.label_map
    for s, t in zip(segments, theirs):
        assert (s.score is None) == (t["score"] is None)
        if s.score is not None:
            assert s.score == pytest.approx(t["score"], abs=1e-3)
        a, b = np.asarray(t["mask"]) > 0, ids == s.id
        assert (a & b).sum() / (a | b).sum() >= 0.95


def test_oneformer_task_tokens_spell_the_task(tiny_oneformer):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_oneformer)
    image = np.zeros((64, 64, 3), np.uint8)
    for task in ("panoptic", "semantic"):
        expected = processor(images=[image], task_inputs=[task], return_tensors="pt")["task_inputs"][0].tolist()
        tokens = Segmenter.load(ModelConfig(name=str(tiny_oneformer), device="cpu", task=task)).head.task_inputs[0].tolist()
        n = sum(1 for t in expected if t)  # OneFormerProcessor pads with 0; the pipeline, and streamseg, with the pad token
        assert len(tokens) == len(expected) == 16 and tokens[:n] == expected[:n] and n < 16


def test_mask2former_semantic_equals_the_pipeline(tiny_mask2former):
    result = _compare_with_pipeline(tiny_mask2former, "semantic")
    assert result.segment_map is None and result.label_map.min() >= 0


def test_oneformer_instance_without_class_info_is_refused(tiny_oneformer):
    with pytest.raises(ModelLoadError, match="cannot do instance segmentation; it can do: panoptic, semantic"):
        Segmenter.load(ModelConfig(name=str(tiny_oneformer), device="cpu", task="instance"))


def test_the_hubs_detr_with_a_timm_resnet_loads_without_timm_and_equals_the_native_model(tmp_path):
    """The seed's model (facebook/detr-resnet-50-panoptic) names timm's resnet50: the same random weights saved
    under timm's names with that config, and natively, give the same weights, raw masks and segments."""
    import importlib.util

    import torch

    from streamseg.testing.models import save_tiny_detr_panoptic

    assert importlib.util.find_spec("timm") is None  # the point: no timm on a plain install
    native = save_tiny_detr_panoptic(tmp_path / "native", resnet="resnet50")
    timm = save_tiny_detr_panoptic(tmp_path / "timm", resnet="resnet50", timm_names=True)
    config = (timm / "config.json").read_text()
    assert '"use_timm_backbone": true' in config and '"backbone": "resnet50"' in config
    assert "layer3.5.downsample" not in config
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB").resize((160, 96)))
    heads, results = [], []
    for folder in (native, timm):
        seg = Segmenter.load(ModelConfig(name=str(folder), device="cpu", engine="torch", task="panoptic"))
        heads.append(seg.head.model)
        results.append(seg.segment([Frame(index=0, image=image)])[0])
    a, b = (m.state_dict() for m in heads)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # every backbone weight found
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(heads[0](pixel_values=x).pred_masks, heads[1](pixel_values=x).pred_masks)
    assert len(results[0].segments()) >= 2
    assert np.array_equal(results[0].segment_map, results[1].segment_map)
    assert [(s.label, s.area) for s in results[0].segments()] == [(s.label, s.area) for s in results[1].segments()]


def test_a_detr_with_a_timm_backbone_other_than_a_resnet_says_it_needs_timm(tmp_path):
    import torch
    from safetensors.torch import save_file
    from transformers import DetrConfig
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    DetrConfig(num_labels=3, backbone="efficientnet_b0").save_pretrained(tmp_path)  # use_timm_backbone=True
    DetrImageProcessorPil().save_pretrained(tmp_path)
    save_file({"unused": torch.zeros(1)}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"needs a package that is not installed: TimmBackbone requires the timm "
                                             r"library.*other than a plain ResNet"):
        Segmenter.load(ModelConfig(name=str(tmp_path), device="cpu"))


def test_instance_video_end_to_end(tiny_detr, tmp_path):
    out, jsonl = tmp_path / "inst.mp4", tmp_path / "inst.jsonl"
    assert main([str(SAMPLE_CLIP), "-o", str(out), "--model", str(tiny_detr), "--task", "instance",
                 "--threshold", "0.5", "--json", str(jsonl), "-q"]) == 0
    frames, times = decode(out)
    assert len(frames) == 100 and times == pytest.approx(decode(SAMPLE_CLIP)[1])
    import json

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 100 and all(r["task"] == "instance" for r in records)
    assert sum(len(r["segments"]) for r in records) > 0
