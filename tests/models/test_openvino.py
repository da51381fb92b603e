"""--engine openvino (and auto on the CPU): torch's labels in fp32 and bf16, a cache that is reused and rebuilt
when damaged, and torch where it does not apply."""

from __future__ import annotations

import logging
import shutil
import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import decode, run_cli, scene_frames, write_clip

from streamseg.config import DType, Engine, ModelConfig
from streamseg.frames import Frame
from streamseg.models import openvino_engine
from streamseg.models.segmenter import Segmenter


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


@pytest.mark.parametrize("dtype, precision", [("float32", "f32"), ("bfloat16", "bf16")])
def test_openvino_gives_the_labels_torch_gives_in_fp32_and_bf16(dtype, precision, demo_model, cache):
    if precision == "bf16" and not openvino_engine.native_bf16():
        pytest.skip("this CPU has no native bf16")
    frames, _ = decode(demo_model.parent / "street.mp4")
    torch_seg = Segmenter.load(ModelConfig(name=str(demo_model), engine="torch"))
    ov_seg = Segmenter.load(ModelConfig(name=str(demo_model), engine=Engine.OPENVINO, dtype=dtype))
    assert ov_seg.engine is Engine.OPENVINO and ov_seg.engine_text == f"openvino {precision}"
    agree = []
    for i in range(0, 40, 5):
        for a, b in zip(torch_seg(frames[i:i + 5]), ov_seg(frames[i:i + 5])):
            assert a.shape == b.shape == frames[0].shape[:2]
            agree.append((a == b).mean())
    assert min(agree) >= (0.999 if precision == "f32" else 0.99), agree
    graphs = list(cache.glob("*.xml"))
    assert len(graphs) == 1 and graphs[0].name.endswith("-256x256.xml") and graphs[0].with_suffix(".bin").exists()
    assert not list(cache.glob("*.part"))


def test_auto_is_openvino_on_the_cpu_with_bf16_where_native(tiny_model, cache):
    seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="auto"))
    assert seg.engine is Engine.OPENVINO
    assert seg.engine_text == ("openvino bf16" if openvino_engine.native_bf16() else "openvino f32")
    fp32 = Segmenter.load(ModelConfig(name=str(tiny_model), engine="auto", dtype=DType.FLOAT32))
    assert fp32.engine_text == "openvino f32"
    torch_seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="auto", compile=True))
    assert torch_seg.engine is Engine.TORCH  # --compile is torch's


def test_the_converted_model_is_reused_and_a_damaged_one_rebuilt(tiny_model, cache, monkeypatch, caplog):
    frames = scene_frames(3)
    first = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
    labels = first(frames)
    assert first.head._compiled.convert_seconds > 0
    (graph,) = cache.glob("*.xml")
    mtime = graph.stat().st_mtime_ns

    def no_convert(*args, **kwargs):
        raise AssertionError("converted again although the model is cached")

    with monkeypatch.context() as m:
        m.setattr(openvino_engine, "convert", no_convert)
        second = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
        again = second(frames)
    assert second.engine is Engine.OPENVINO and second.head._compiled.convert_seconds == 0
    assert graph.stat().st_mtime_ns == mtime
    assert all(np.array_equal(a, b) for a, b in zip(labels, again))

    weights = graph.with_suffix(".bin")
    damages = {  # a damaged entry (a copy cut short, a full disk, a stray file): converted again, one warning
        "xml cut short": lambda: graph.write_text(graph.read_text()[:5000]),
        "weights cut short": lambda: weights.write_bytes(weights.read_bytes()[:1000]),
        "empty files": lambda: (graph.write_bytes(b""), weights.write_bytes(b"")),
        "not an IR": lambda: graph.write_text("garbage"),  # once made OpenVINO try other formats, printing C++ errors
    }
    for what, damage in damages.items():
        damage()
        shutil.rmtree(cache / "compiled", ignore_errors=True)  # the blob cache would hide a damaged IR
        third = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamseg"):
            rebuilt = third(frames)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert third.engine is Engine.OPENVINO and len(warned) == 1 and "was unreadable" in warned[0], (what, warned)
        assert "converted it again" in warned[0]
        assert all(np.array_equal(a, b) for a, b in zip(labels, rebuilt)), what


def test_a_cache_folder_that_cannot_be_written_still_runs_openvino_with_one_warning(tiny_model, monkeypatch, caplog):
    monkeypatch.setenv("STREAMSEG_CACHE", "/proc/streamseg-cache")  # not creatable, even for root
    segmenter = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        labels = segmenter(scene_frames(2))
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert segmenter.engine is Engine.OPENVINO and len(labels) == 2
    assert len(warned) == 1 and "cannot be written" in warned[0] and "for this run only" in warned[0], warned


def test_missing_openvino_falls_back_to_torch_and_auto_says_nothing(tiny_model, cache, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        explicit = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino"))
    assert explicit.engine is Engine.TORCH
    assert "openvino is not installed (pip install openvino); running the model in torch" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        auto = Segmenter.load(ModelConfig(name=str(tiny_model), engine="auto"))
    assert auto.engine is Engine.TORCH and auto.engine_text == "torch float32" and not caplog.text


@pytest.mark.parametrize("fixture", ["tiny_mask2former", "tiny_detr", "tiny_oneformer"])
def test_instance_and_panoptic_models_run_in_openvino_with_torchs_segments(fixture, request, cache):
    """Mask2Former, DETR and OneFormer (its task tokens baked into the graph) convert; in f32 their segments equal
    torch's through the same post-processing, in bf16 they run; auto picks OpenVINO for them on the CPU."""
    model = request.getfixturevalue(fixture)
    frames = [Frame(index=i, image=image) for i, image in enumerate(scene_frames(4))]
    torch_seg = Segmenter.load(ModelConfig(name=str(model), engine="torch"))
    ov_seg = Segmenter.load(ModelConfig(name=str(model), engine="openvino", dtype="float32"))
    assert ov_seg.engine is Engine.OPENVINO and ov_seg.engine_text == "openvino f32"
    want, got = torch_seg.segment(frames[:2]), ov_seg.segment(frames[:2])
    want += torch_seg.segment(frames[2:3])
    got += ov_seg.segment(frames[2:3])  # a batch of another size: the graph's batch is dynamic
    for a, b in zip(want, got, strict=True):
        assert b.segment_map is not None and b.label_map.shape == frames[0].image.shape[:2]
        assert (a.label_map == b.label_map).mean() >= 0.999
        assert [(i, c) for i, c, _ in a.segment_info] == [(i, c) for i, c, _ in b.segment_info]
        assert np.allclose([s for *_, s in a.segment_info], [s for *_, s in b.segment_info], atol=1e-3)
    (graph,) = cache.glob("*.xml")
    auto = Segmenter.load(ModelConfig(name=str(model), engine="auto"))
    assert auto.engine is Engine.OPENVINO
    assert auto.engine_text == ("openvino bf16" if openvino_engine.native_bf16() else "openvino f32")
    assert [r.label_map.shape for r in auto.segment(frames[3:])] == [frames[0].image.shape[:2]]


def test_models_openvino_cannot_run_get_one_warning_and_torch(tiny_clipseg, tiny_mask2former, cache, caplog):
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        auto = Segmenter.load(ModelConfig(name=str(tiny_clipseg), engine="auto", prompts=("a car",)))
    assert auto.engine is Engine.TORCH and not caplog.text  # auto: torch, quietly
    assert auto.engine_text == "torch float32"
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        explicit = Segmenter.load(ModelConfig(name=str(tiny_clipseg), engine="openvino", prompts=("a car",)))
    assert explicit.engine is Engine.TORCH
    assert caplog.text.count("--engine openvino does not run text prompts (CLIPSeg) models") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        onnx = Segmenter.load(ModelConfig(name=str(tiny_mask2former), engine="onnxruntime"))
    assert onnx.engine is Engine.TORCH and "--engine onnxruntime does not run universal" in caplog.text
    assert not cache.exists()


def test_cli_with_openvino_writes_every_frame_and_says_its_engine(tiny_model, tmp_path, cache):
    clip = write_clip(tmp_path / "in.mp4", scene_frames(12), list(range(12)), Fraction(1, 25))
    out = tmp_path / "out.mp4"
    proc = run_cli(str(clip), "-o", str(out), "--model", str(tiny_model), "--engine", "openvino", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr
    assert len(decode(out)[0]) == 12
    assert "engine openvino f32" in proc.stderr and "converted the model to OpenVINO" in proc.stderr
    assert list(cache.glob("*.xml"))


def test_the_forward_follows_the_thread_count_the_tuner_sets(tiny_model, cache):
    import torch

    seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
    frames = scene_frames(2)
    before = torch.get_num_threads()
    try:
        seen = {}
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            seen[n] = seg(frames)
            compiled = seg.head._compiled.compiled(64, 64)
            assert compiled.get_property("INFERENCE_NUM_THREADS") == n
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(seen[1], seen[2]))


def test_a_damaged_compiled_blob_is_compiled_again(tiny_model, cache):
    frames = scene_frames(2)
    labels = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))(frames)
    blobs = [p for p in (cache / "compiled").rglob("*") if p.is_file()]
    assert blobs  # later starts compile from OpenVINO's blob cache
    for blob in blobs:
        blob.write_bytes(b"\0garbage" * 10)
    again = Segmenter.load(ModelConfig(name=str(tiny_model), engine="openvino", dtype="float32"))
    assert all(np.array_equal(a, b) for a, b in zip(labels, again(frames)))
    assert again.engine is Engine.OPENVINO


def test_a_cached_graph_runs_without_loading_the_torch_model_and_new_weights_are_converted(tiny_model, tmp_path,
                                                                                           cache, monkeypatch):
    import os
    import shutil

    from transformers import AutoModelForSemanticSegmentation

    model = shutil.copytree(tiny_model, tmp_path / "model")
    frames = scene_frames(3)
    first = Segmenter.load(ModelConfig(name=str(model), engine="openvino", dtype="float32"))
    labels = first(frames)
    assert first.head._compiled.convert_seconds > 0

    def refuse(*args, **kwargs):
        raise AssertionError("the torch model was loaded although its graph is cached")

    with monkeypatch.context() as m:
        m.setattr(AutoModelForSemanticSegmentation, "from_pretrained", refuse)
        second = Segmenter.load(ModelConfig(name=str(model), engine="openvino", dtype="float32"))
        assert second.head._eager is None
        assert all(np.array_equal(a, b) for a, b in zip(labels, second(frames)))
        assert second.engine_text == "openvino f32" and second.head._eager is None

    weights = model / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # new weights: a new key, converted again
    third = Segmenter.load(ModelConfig(name=str(model), engine="openvino", dtype="float32"))
    assert all(np.array_equal(a, b) for a, b in zip(labels, third(frames)))
    assert third.head._compiled.convert_seconds > 0 and len(list(cache.glob("*.xml"))) == 2
