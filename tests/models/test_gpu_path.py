"""The GPU path, checked where it can be on any machine: blending on the device, the encoder choice, fp16.

Tests marked ``cuda`` need a CUDA device; they are skipped elsewhere and run by ``benchmarks/gpu.sh``.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import SAMPLE_CLIP, decode, run_cli, scene_frames, write_clip

from streamseg.cli import main as cli_main
from streamseg.config import DType, ModelConfig, RenderConfig, Style
from streamseg.frames import Frame, SegmentationResult
from streamseg.models.segmenter import Segmenter
from streamseg.models.tensor_ops import download
from streamseg.render.device import DeviceBlender
from streamseg.render.renderer import Renderer
from streamseg.testing.scenes import scene

ID2LABEL = {i: name for i, name in enumerate(["road", "sky", "person", "car", "tree", "building", "sign"])}
CASES = [
    RenderConfig(style=Style.FILL),
    RenderConfig(style=Style.FILL, alpha=0.73, exclude=("sky",)),
    RenderConfig(style=Style.FILL, classes=("person", "car")),
    RenderConfig(style=Style.MASK, exclude=("road",)),
    RenderConfig(style=Style.BLUR_BACKGROUND, keep=("person",)),
    RenderConfig(style=Style.REPLACE_BACKGROUND, keep=("person", "car"), background="#102030"),
]


def picture_and_labels(height=90, width=160, seed=0):
    rng = np.random.default_rng(seed)
    image = np.ascontiguousarray(scene_frames(1, width, height, seed=seed)[0])
    image = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)  # texture to blur
    labels = rng.integers(0, len(ID2LABEL), (height // 10, width // 10)).repeat(10, 0).repeat(10, 1).astype(np.uint8)
    return image, labels


def host_and_device(config: RenderConfig, image, labels, device="cpu"):
    renderer = Renderer(config, ID2LABEL, len(ID2LABEL))
    result = SegmentationResult(frame=Frame(image=image, index=0), label_map=labels, id2label=ID2LABEL)
    host = renderer(result)
    blender = DeviceBlender(renderer, torch.device(device))
    drawn = blender(torch.from_numpy(image)[None].to(device), torch.from_numpy(labels)[None].to(device))
    return host, download([drawn[0]])[0]


@pytest.mark.parametrize("config", CASES, ids=lambda c: f"{c.style.value}-{c.alpha}-{','.join(c.classes + c.exclude)}")
def test_blending_on_the_device_gives_the_host_renderers_pixels(config):
    image, labels = picture_and_labels()
    host, device = host_and_device(config, image, labels)
    assert device.shape == host.shape and device.dtype == np.uint8
    assert np.abs(device.astype(int) - host.astype(int)).max() <= 1
    if config.style is Style.BLUR_BACKGROUND:  # the blur happened: background pixels changed, kept ones did not
        person = labels == 2
        assert (device[person] == image[person]).all() and (device[~person] != image[~person]).any()


def test_a_background_picture_and_void_labels_are_drawn_as_on_the_host(tmp_path):
    from PIL import Image

    image, labels = picture_and_labels(seed=4)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "bg.png")
    host, device = host_and_device(RenderConfig(style=Style.REPLACE_BACKGROUND, keep=("car",),
                                                background=str(tmp_path / "bg.png")), image, labels)
    assert np.abs(device.astype(int) - host.astype(int)).max() <= 1
    void = labels.astype(np.int32)
    void[:30] = -1  # an instance model's "no segment"
    host, device = host_and_device(RenderConfig(style=Style.FILL), image, void)
    assert (device[:30] == image[:30]).all() and np.abs(device.astype(int) - host.astype(int)).max() <= 1


@pytest.mark.parametrize("style", ["fill", "blur-background", "mask", "contour"])
def test_a_run_blended_on_the_device_writes_the_frames_a_host_run_writes(tiny_model, tmp_path, style):
    """The whole path: the uploaded batch kept on the device, drawn there, one copy back; legend on the host."""
    outs = {}
    for where in ("device", "host"):
        out = tmp_path / where
        keep = ["--keep", "0"] if style == "blur-background" else []
        # In this process (the CLI's main, as the console script calls it): two interpreters per style cost 30 s.
        code = cli_main([str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", str(out), "--duration", "0.4",
                         "--style", style, *keep, "--legend", "--blend", where, "--device", "cpu", "-q"])
        assert code == 0
        outs[where] = sorted(out.glob("*.png"))
    assert len(outs["device"]) == len(outs["host"]) >= 8
    from PIL import Image

    for a, b in zip(outs["device"], outs["host"]):
        pa, pb = np.asarray(Image.open(a)).astype(int), np.asarray(Image.open(b)).astype(int)
        assert pa.shape == pb.shape and np.abs(pa - pb).max() <= 1, a.name


def test_the_segmenter_draws_on_the_device_only_for_semantic_models(tiny_model, tiny_detr):
    semantic = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    renderer = Renderer(RenderConfig(), semantic.id2label, semantic.num_labels)
    assert semantic.draw_on_device(DeviceBlender(renderer, semantic.device))
    image, _ = picture_and_labels(64, 96)
    [result] = semantic.segment([Frame(image=image, index=0)])
    assert result.drawn is not None and result.drawn.shape == image.shape
    again = Renderer(RenderConfig(), semantic.id2label, semantic.num_labels)
    host = again(SegmentationResult(frame=result.frame, label_map=result.label_map, id2label=result.id2label))
    assert np.abs(result.drawn.astype(int) - host.astype(int)).max() <= 1
    assert not semantic.draw_on_device(None)
    panoptic = Segmenter.load(ModelConfig(name=str(tiny_detr), device="cpu"))
    assert not panoptic.draw_on_device(DeviceBlender(renderer, panoptic.device))


def test_nvenc_that_cannot_open_falls_back_to_x264_with_one_warning(tmp_path, caplog):
    """No NVIDIA encoder here (or no driver): the file is still H.264, written by libx264, and it says so once."""
    import streamseg.outputs.video as vf

    if vf.encoder_problem("h264_nvenc") is None:
        pytest.skip("h264_nvenc opens on this machine")
    vf._fell_back.discard("h264_nvenc")
    frames = scene_frames(6)
    with caplog.at_level(logging.WARNING, logger="streamseg.outputs.video"):
        for k in range(2):
            sink = vf.VideoFileSink(tmp_path / f"o{k}.mp4", fps=25, encoder="h264_nvenc")
            with sink:
                for i, img in enumerate(frames):
                    sink.write(Frame(image=img, index=i))
            assert sink.encoder == "libx264"
    warnings = [r.getMessage() for r in caplog.records if "h264_nvenc" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("h264_nvenc cannot open (") and "libx264" in warnings[0]
    for k in range(2):
        got, times = decode(tmp_path / f"o{k}.mp4")
        assert len(got) == 6 and np.allclose(np.diff(times), 0.04)
        with av.open(str(tmp_path / f"o{k}.mp4")) as c:
            assert c.streams.video[0].codec_context.name == "h264"


def test_encoder_auto_on_a_gpu_without_nvenc_is_x264_without_a_warning(monkeypatch, caplog):
    """H100 and H200 decode (NVDEC) but have no encoder: auto takes libx264 quietly; with one, NVENC."""
    import streamseg.outputs.video as vf

    monkeypatch.setattr(vf, "encoder_problem", lambda name: "OpenEncodeSessionEx failed: unsupported device (2)")
    with caplog.at_level(logging.WARNING):
        assert [vf.auto_encoder(d) for d in ("cuda", "cuda", "cpu")] == ["libx264"] * 3
    assert not caplog.records
    monkeypatch.setattr(vf, "encoder_problem", lambda name: None)
    assert (vf.auto_encoder("cuda"), vf.auto_encoder("cpu")) == ("h264_nvenc", "libx264")


def test_the_encoder_flag_is_checked_and_reaches_the_file(tiny_model, tmp_path):
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_model), "-o", str(tmp_path / "o.mp4"), "--duration", "0.2",
                   "--encoder", "h264_nvenc", "--device", "cpu", "-q", subprocess_only=True)  # one warning a process
    assert proc.returncode == 0, proc.stderr
    import streamseg.outputs.video as vf

    if vf.encoder_problem("h264_nvenc") is not None:
        assert "h264_nvenc cannot open" in proc.stderr and proc.stderr.count("h264_nvenc cannot open") == 1
    assert len(decode(tmp_path / "o.mp4")[0]) == 5
    bad = run_cli(str(SAMPLE_CLIP), "-o", str(tmp_path / "p.mp4"), "--encoder", "mpeg2")
    assert bad.returncode == 2 and "invalid choice: 'mpeg2'" in bad.stderr and len(bad.stderr.splitlines()) == 1


@pytest.mark.parametrize("dtype", [DType.FLOAT16, DType.BFLOAT16])
def test_half_precision_labels_agree_with_float32_on_the_demo_model(demo_model, dtype):
    """The fp16/bf16 code path (cast on the device, labels from half logits) run on the CPU."""
    frames = [Frame(image=scene(seed=900 + k, width=320, height=180)[0], index=k) for k in range(3)]
    full = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", engine="torch"))
    half = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", dtype=dtype, engine="torch"))
    assert next(half.eager_model.parameters()).dtype == {DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}[dtype]
    assert half.preprocess([frames[0].image]).dtype == next(half.eager_model.parameters()).dtype
    for a, b in zip(full.segment(frames), half.segment(frames)):
        agree = float((a.label_map == b.label_map).mean())
        assert agree >= 0.99, agree
        assert len(np.unique(a.label_map)) >= 3  # a real scene, not one class everywhere


# -- on a CUDA device (benchmarks/gpu.sh runs these) ------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_blending_gives_the_host_renderers_pixels():
    image, labels = picture_and_labels(720, 1280)
    for config in CASES:
        host, device = host_and_device(config, image, labels, device="cuda")
        assert np.abs(device.astype(int) - host.astype(int)).max() <= 1, config


@pytest.mark.cuda
def test_cuda_fp16_run_end_to_end_writes_every_frame(demo_model, tmp_path):
    frames = scene_frames(24, 640, 360)
    clip = write_clip(tmp_path / "in.mp4", frames, list(range(24)), Fraction(1, 25))
    proc = run_cli(str(clip), "--model", str(demo_model), "--device", "cuda", "--dtype", "float16",
                   "-o", str(tmp_path / "o.mp4"), "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    got, times = decode(tmp_path / "o.mp4")
    assert len(got) == 24 and np.allclose(times, np.arange(24) / 25)
    full = Segmenter.load(ModelConfig(name=str(demo_model), device="cuda"))
    half = Segmenter.load(ModelConfig(name=str(demo_model), device="cuda", dtype=DType.FLOAT16))
    for a, b in zip(full(frames[:8]), half(frames[:8])):
        assert float((a == b).mean()) >= 0.99


@pytest.mark.cuda
def test_cuda_nvenc_writes_a_playable_file_when_it_opens(tmp_path):
    import streamseg.outputs.video as vf

    problem = vf.encoder_problem("h264_nvenc")
    if problem is not None:
        pytest.skip(f"h264_nvenc cannot open on this machine: {problem}")
    frames = scene_frames(30, 640, 360)
    with vf.VideoFileSink(tmp_path / "nv.mp4", fps=25, encoder="h264_nvenc") as sink:
        for i, img in enumerate(frames):
            sink.write(Frame(image=img, index=i))
    assert sink.encoder == "h264_nvenc"
    got, times = decode(tmp_path / "nv.mp4")
    assert len(got) == 30 and np.allclose(times, np.arange(30) / 25)
    assert np.abs(got[10].astype(int) - frames[10].astype(int)).mean() < 6  # the picture, not noise
