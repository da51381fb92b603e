"""--engine onnxruntime: the same labels as torch, a cache that is reused, and clean fallbacks to torch."""

from __future__ import annotations

import logging
import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import decode, run_cli, scene_frames, write_clip

from streamseg.config import Engine, ModelConfig
from streamseg.errors import InputError
from streamseg.models.segmenter import Segmenter

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_onnxruntime_gives_the_labels_torch_gives(demo_model, cache):
    frames, _ = decode(demo_model.parent / "street.mp4")
    torch_seg = Segmenter.load(ModelConfig(name=str(demo_model), engine="torch"))
    onnx_seg = Segmenter.load(ModelConfig(name=str(demo_model), engine=Engine.ONNXRUNTIME))
    assert onnx_seg.engine is Engine.ONNXRUNTIME
    agree = []
    for i in range(0, 40, 5):
        for a, b in zip(torch_seg(frames[i:i + 5]), onnx_seg(frames[i:i + 5])):
            agree.append((a == b).mean())
    assert min(agree) >= 0.999, agree
    graphs = list(cache.glob("*.onnx"))
    assert len(graphs) == 1 and graphs[0].name.endswith("-256x256.onnx")  # the demo model's input size
    assert not list(cache.glob("*.part"))


def test_the_exported_graph_is_reused(tiny_model, cache, monkeypatch):
    frames = scene_frames(3)
    first = Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))
    labels = first(frames)
    (graph,) = cache.glob("*.onnx")
    mtime = graph.stat().st_mtime_ns

    import streamseg.models.onnx_runtime as ort_engine

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph is cached")

    monkeypatch.setattr(ort_engine, "export", no_export)
    second = Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))
    again = second(frames)
    assert second.engine is Engine.ONNXRUNTIME
    assert graph.stat().st_mtime_ns == mtime
    assert all(np.array_equal(a, b) for a, b in zip(labels, again))


def test_missing_onnxruntime_falls_back_to_torch(tiny_model, cache, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))
    assert seg.engine is Engine.TORCH
    assert "onnxruntime is not installed (pip install 'streamseg[onnx]'); running the model in torch" in caplog.text
    reference = Segmenter.load(ModelConfig(name=str(tiny_model), engine="torch"))
    frames = scene_frames(2)
    assert all(np.array_equal(a, b) for a, b in zip(seg(frames), reference(frames)))


def test_a_damaged_graph_is_exported_again_with_one_warning_and_a_failing_export_falls_back_to_torch(
        tiny_model, cache, caplog, monkeypatch):
    frames = scene_frames(2)
    reference = Segmenter.load(ModelConfig(name=str(tiny_model), engine="torch"))(frames)
    Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))(frames)  # export once
    (graph,) = cache.glob("*.onnx")
    for damage in (b"not an onnx graph", graph.read_bytes()[:500], b""):  # a stray file, a copy cut short, empty
        graph.write_bytes(damage)
        seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamseg"):
            labels = seg(frames)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert seg.engine is Engine.ONNXRUNTIME and len(warned) == 1 and "was unreadable" in warned[0], warned
        assert all(np.array_equal(a, b) for a, b in zip(labels, reference))

    import streamseg.models.onnx_runtime as ort_engine

    def failing_export(*args, **kwargs):
        raise RuntimeError("the exporter cannot trace this model")

    graph.unlink()
    monkeypatch.setattr(ort_engine, "export", failing_export)
    seg = Segmenter.load(ModelConfig(name=str(tiny_model), engine="onnxruntime"))
    with caplog.at_level(logging.WARNING, logger="streamseg"):
        labels = seg(frames)
    assert seg.engine is Engine.TORCH
    assert "ONNX export or session failed" in caplog.text and "running the model in torch" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(labels, reference))


def test_compile_and_onnxruntime_are_alternatives(tiny_model, tmp_path):
    with pytest.raises(InputError, match="--compile applies to --engine torch only"):
        ModelConfig(name=str(tiny_model), engine="onnxruntime", compile=True)
    proc = run_cli(str(tmp_path / "in.mp4"), "--model", str(tiny_model), "--engine", "onnxruntime", "--compile")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["streamseg: error: --compile applies to --engine torch only"]


def test_cli_with_onnxruntime_writes_every_frame(tiny_model, tmp_path, cache):
    clip = write_clip(tmp_path / "in.mp4", scene_frames(12), list(range(12)), Fraction(1, 25))
    out = tmp_path / "out.mp4"
    proc = run_cli(str(clip), "-o", str(out), "--model", str(tiny_model), "--engine", "onnxruntime", "-q",
                   env={"STREAMSEG_CACHE": str(cache.parent)})
    assert proc.returncode == 0, proc.stderr
    frames, times = decode(out)
    assert len(frames) == 12
    assert list(cache.glob("*.onnx"))
