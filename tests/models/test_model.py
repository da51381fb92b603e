import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE_CLIP, decode, save_tiny_segformer, scene_frames

from streamseg.config import DType, ModelConfig
from streamseg.errors import InputError, ModelLoadError
from streamseg.models.loading import resolve_device, resolve_dtype
from streamseg.models.preprocess import PreprocessSpec
from streamseg.models.segmenter import Segmenter
from streamseg.models.tensor_ops import upsampled_argmax


def test_upsampled_argmax_matches_full_interpolation_on_smooth_logits():
    torch.manual_seed(0)
    # Smooth fields over 150 classes, like a real model's logits.
    logits = F.interpolate(torch.randn(1, 150, 12, 12) * 3, size=(64, 64), mode="bilinear")[0]
    ref = F.interpolate(logits[None], size=(360, 640), mode="bilinear", align_corners=False)[0].argmax(0)
    got = upsampled_argmax(logits, 360, 640)
    assert got.shape == (360, 640)
    assert (got == ref).float().mean().item() >= 0.999


def test_upsampled_argmax_is_exact_where_neighbours_agree():
    logits = torch.zeros(3, 4, 4)
    logits[1, :, :2] = 5.0  # left half class 1
    logits[2, :, 2:] = 5.0  # right half class 2
    ref = F.interpolate(logits[None], size=(17, 31), mode="bilinear", align_corners=False)[0].argmax(0)
    assert torch.equal(upsampled_argmax(logits, 17, 31), ref)


def test_preprocess_matches_the_transformers_image_processor(tiny_model):
    from transformers import AutoImageProcessor

    seg = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    images, _ = decode(SAMPLE_CLIP)
    batch = images[:3]
    ours = seg.preprocess(batch)
    theirs = AutoImageProcessor.from_pretrained(tiny_model)(images=batch, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (3, 3, 64, 64)
    # PIL and torch antialiasing differ by a grey level here and there (1 level = 0.0175 after normalising).
    diff = (ours - theirs).abs()
    assert diff.mean().item() < 0.02
    assert (diff < 0.036).float().mean().item() > 0.97


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_the_resize_is_pils_within_one_grey_level(resample):
    """The CPU resizes uint8 frames antialiased in uint8, as PIL does (and 13x faster than in float32)."""
    from PIL import Image

    from streamseg.models.preprocess import Preprocessor, PreprocessSpec

    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (5, 5), 0) for _ in range(2)]
    frames.append(np.ascontiguousarray(frames[0][:100, :120]))  # a small one: enlarged
    spec = PreprocessSpec(size={"height": 256, "width": 320}, resample=resample, do_normalize=False)
    pre = Preprocessor(spec, device=torch.device("cpu"), dtype=torch.float32)
    pil = Image.BILINEAR if resample == "bilinear" else Image.BICUBIC
    for frame in frames:
        ours = (pre([frame])[0] * 255).round().permute(1, 2, 0).numpy().astype(int)
        theirs = np.asarray(Image.fromarray(frame).resize((320, 256), pil)).astype(int)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1
        assert (ours == theirs).mean() > 0.9


def test_label_map_agrees_with_post_process_semantic_segmentation(demo_model):
    """streamseg's label map vs transformers' own pre- and post-processing on the sample clip."""
    from transformers import AutoImageProcessor

    seg = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu"))
    processor = AutoImageProcessor.from_pretrained(demo_model)
    images, _ = decode(SAMPLE_CLIP)
    images = images[::10]
    ours = seg(images)
    with torch.inference_mode():
        inputs = processor(images=images, return_tensors="pt")
        outputs = seg.model(**inputs)
        theirs = processor.post_process_semantic_segmentation(outputs, target_sizes=[im.shape[:2] for im in images])
    agreement = np.mean([(a == b.numpy()).mean() for a, b in zip(ours, theirs)])
    print(f"pixel agreement with post_process_semantic_segmentation: {agreement:.4%}")
    assert agreement >= 0.99
    assert ours[0].shape == images[0].shape[:2] and ours[0].dtype == np.uint8


def test_batches_of_mixed_sizes_keep_each_frames_size(tiny_model):
    seg = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    a = np.zeros((50, 70, 3), np.uint8)
    b = np.full((33, 41, 3), 200, np.uint8)
    maps = seg([a, b, a])
    assert [m.shape for m in maps] == [(50, 70), (33, 41), (50, 70)]
    assert np.array_equal(maps[0], maps[2])


def test_label_map_uses_every_class_id_in_range(tiny_model):
    seg = Segmenter.load(ModelConfig(name=str(tiny_model), device="cpu"))
    images, _ = decode(SAMPLE_CLIP)
    m = seg(images[:2])[0]
    assert m.max() < seg.num_labels == 5
    assert seg.id2label[4] == "class4"


@pytest.mark.parametrize("name, message", [
    ("./no/such/model", "model folder not found: ./no/such/model"),
    ("nobody-has/this-model-xyz", "model 'nobody-has/this-model-xyz' not found: .*--model PATH"),
])
def test_unknown_models_fail_with_one_clear_line(name, message):
    with pytest.raises(ModelLoadError, match=message):
        Segmenter.load(ModelConfig(name=name, device="cpu"))


def test_a_typo_in_a_local_models_name_is_no_such_folder_not_a_hub_miss(tmp_path, monkeypatch):
    """``DIR/name`` has a Hub id's shape; when DIR is a folder here it is a path: no Hub lookup, the near name."""
    (tmp_path / "models" / "demo-segformer").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        Segmenter.load(ModelConfig(name="models/demo-segformr", device="cpu"))
    assert str(caught.value) == "model folder not found: models/demo-segformr (did you mean models/demo-segformer?)"


def test_a_model_that_is_not_for_segmentation_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"is not a segmentation model \(its type is .bert.\)"):
        Segmenter.load(ModelConfig(name=str(tmp_path), device="cpu"))


def test_cuda_requested_without_cuda_is_bad_input():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")


def test_invalid_device_names_list_the_choices():
    with pytest.raises(InputError, match="expected auto, cpu, cuda or cuda:N"):
        ModelConfig(device="gpu")


def test_auto_dtype_is_float32_on_cpu_and_float16_on_cuda():
    assert resolve_dtype(DType.AUTO, torch.device("cpu")) is torch.float32
    assert resolve_dtype(DType.AUTO, torch.device("cuda")) is torch.float16
    assert resolve_dtype(DType.BFLOAT16, torch.device("cpu")) is torch.bfloat16


def test_shortest_edge_and_dpt_sizes():
    spec = PreprocessSpec(size={"shortest_edge": 256})
    assert spec.output_size(360, 640) == (256, 455)
    assert spec.output_size(640, 360) == (455, 256)
    dpt = PreprocessSpec(size={"height": 384, "width": 384}, keep_aspect_ratio=True, ensure_multiple_of=32)
    assert dpt.output_size(360, 640) == (384, 672)


def test_float16_model_on_cpu_still_gives_label_maps(tmp_path):
    folder = save_tiny_segformer(tmp_path, num_labels=3)
    seg = Segmenter.load(ModelConfig(name=str(folder), device="cpu", dtype=DType.BFLOAT16, engine="torch"))
    assert next(seg.model.parameters()).dtype is torch.bfloat16
    (m,) = seg([np.zeros((20, 30, 3), np.uint8)])
    assert m.shape == (20, 30) and m.max() < 3


def test_smoothing_reduces_flicker_on_a_still_noisy_clip(demo_model):
    from streamseg.testing.scenes import StreetScene

    base, _ = StreetScene(4242).render(0.0, noise=0)
    rng = np.random.default_rng(0)
    frames = [np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8) for _ in range(20)]

    def changes_per_pixel(smooth):
        seg = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", smooth=smooth))
        maps = seg(frames[:7]) + seg(frames[7:])  # the state carries across batches
        return sum((a != b).mean() for a, b in zip(maps, maps[1:]))

    off, on = changes_per_pixel(0.0), changes_per_pixel(0.8)
    print(f"label changes per pixel over 20 noisy frames: {off:.3f} without smoothing, {on:.3f} with 0.8")
    assert on < off / 4


def test_smoothing_is_refused_for_panoptic_models(tiny_mask2former):
    with pytest.raises(InputError, match="--smooth applies to semantic models \\(per-class logits\\) only"):
        Segmenter.load(ModelConfig(name=str(tiny_mask2former), device="cpu", smooth=0.5))


def test_compiled_model_gives_the_same_labels_as_eager(demo_model):
    """--compile is a fast path: it must not change a single label, short last batch included."""
    images, _ = decode(SAMPLE_CLIP)
    images = images[:7]
    eager = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", engine="torch"))
    compiled = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu", compile=True))
    expected = eager(images[:4]) + eager(images[4:])
    got = compiled(images[:4]) + compiled(images[4:])  # the second batch (3 frames) is padded to 4
    assert compiled.head._pad_to == 4 and compiled.model is not compiled.eager_model  # it really ran compiled
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_compile_is_refused_for_universal_models(tiny_mask2former):
    with pytest.raises(InputError, match="--compile applies to semantic models"):
        Segmenter.load(ModelConfig(name=str(tiny_mask2former), device="cpu", compile=True))


def test_out_of_memory_halves_the_batch_and_retries(tiny_model, caplog):
    import torch

    from streamseg.errors import StreamsegError
    from streamseg.frames import Frame

    seg = Segmenter.load(ModelConfig(name=str(tiny_model)))
    frames = [Frame(index=i, image=img) for i, img in enumerate(scene_frames(5))]
    reference = [r.label_map for r in seg.segment(frames)]
    real_forward = seg.forward
    sizes = []

    def forward(pixel_values):  # a device that holds 2 frames at most
        sizes.append(pixel_values.shape[0])
        if pixel_values.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(pixel_values)

    seg.forward = forward
    with caplog.at_level("WARNING", logger="streamseg"):
        results = seg.segment(frames)
    assert all(np.array_equal(r.label_map, m) for r, m in zip(results, reference))
    assert [r.frame.index for r in results] == [0, 1, 2, 3, 4]
    assert sizes == [5, 3, 2, 1, 2]  # 5 fails, 3 fails, then 2+1 and 2
    assert "out of memory on cpu with a batch of 5; retrying in batches of 3" in caplog.text
    assert seg.max_batch == 2
    sizes.clear()
    assert len(seg.segment(frames)) == 5 and sizes == [2, 2, 1]  # later batches start at the size that worked

    seg.forward = lambda pixel_values: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(StreamsegError, match="out of memory on cpu even with one frame per batch"):
        seg.segment(frames[:1])


@pytest.mark.parametrize("saved", ["as saved", "int size", "defaults"])
def test_segformers_processor_read_from_its_json_is_what_transformers_reads(demo_model, tmp_path, saved):
    """SegFormer's processor settings are read from the JSON (transformers' processors cost 2 s to import)."""
    import json
    import shutil

    from transformers import AutoImageProcessor

    from streamseg.models import loading

    model = shutil.copytree(demo_model, tmp_path / "model")
    config = json.loads((model / "preprocessor_config.json").read_text())
    if saved == "int size":  # as the Hub's nvidia/segformer-* files say it
        config.update(size=320, feature_extractor_type="SegformerFeatureExtractor", image_mean=[0.5, 0.4, 0.3])
        del config["image_processor_type"]
    elif saved == "defaults":
        config = {"image_processor_type": "SegformerImageProcessor"}
    (model / "preprocessor_config.json").write_text(json.dumps(config))
    ld = loading.Loading(str(model), {}, ModelConfig(name=str(model)), None, "segformer", torch.device("cpu"),
                         torch.float32, None)
    ours = loading._segformer_processor(ld)
    assert ours is not None
    assert PreprocessSpec.from_processor(ours) == PreprocessSpec.from_processor(AutoImageProcessor.from_pretrained(model))
    assert PreprocessSpec.from_processor(ours).size["height"] == {"as saved": 256, "int size": 320, "defaults": 512}[saved]
