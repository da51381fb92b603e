"""The offline demo model in sample_media/: trained on synthetic streets, measured on scenes it never saw."""

import numpy as np
import pytest

from streamseg.config import ModelConfig
from streamseg.models.segmenter import Segmenter
from streamseg.testing.scenes import CLASSES, StreetScene

HELD_OUT_SEEDS = range(900_000, 900_024)  # training used seeds 100_000..100_699; the sample clip uses 7 and 8


@pytest.fixture(scope="module")
def segmenter(demo_model):
    return Segmenter.load(ModelConfig(name=str(demo_model), device="cpu"))


def test_demo_model_loads_through_the_auto_classes_with_its_class_names(segmenter):
    assert type(segmenter.model).__name__ == "SegformerForSemanticSegmentation"
    assert [segmenter.id2label[i] for i in range(len(CLASSES))] == list(CLASSES)


def test_demo_model_miou_on_fresh_held_out_frames(segmenter):
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    for i, seed in enumerate(HELD_OUT_SEEDS):
        image, truth = StreetScene(seed).render(float(i * 7))
        (pred,) = segmenter([image])
        for c in range(len(CLASSES)):
            inter[c] += np.sum((pred == c) & (truth == c))
            union[c] += np.sum((pred == c) | (truth == c))
    iou = inter / np.maximum(union, 1)
    report = ", ".join(f"{name} {v:.3f}" for name, v in zip(CLASSES, iou))
    print(f"demo model mIoU {iou.mean():.3f} on {len(HELD_OUT_SEEDS)} held-out frames ({report})")
    assert iou.mean() >= 0.8, report
    assert iou.min() >= 0.6, report


@pytest.fixture(scope="module")
def held_out_clip(tmp_path_factory):
    """A held-out scene as a lossless clip, with the true label of every pixel of every frame."""
    from fractions import Fraction

    from conftest import write_clip

    scene = StreetScene(900_100, 320, 180)
    frames, truths = zip(*(scene.render(float(i)) for i in range(12)))
    path = write_clip(tmp_path_factory.mktemp("held-out") / "clip.mkv", list(frames), list(range(12)),
                      Fraction(1, 25), codec="ffv1")
    return path, np.stack(truths)


def _miou(preds, truths):
    iou = []
    for c in range(len(CLASSES)):
        inter = np.sum((preds == c) & (truths == c))
        union = np.sum((preds == c) | (truths == c))
        if union:
            iou.append(inter / union)
    return float(np.mean(iou))


@pytest.mark.parametrize("extra", [["--batch-size", "1"], ["--batch-size", "5", "--style", "mask", "--legend"],
                                   ["--batch-size", "3", "--style", "replace-background", "--keep", "person",
                                    "--show-fps", "--labels"]])
def test_demo_model_miou_through_the_cli_and_its_exports(held_out_clip, demo_model, tmp_path, extra):
    """Batching, styles and overlays never change labels: the --masks export reaches the same mIoU."""
    from streamseg.cli import main
    from streamseg.outputs.exports import read_mask_png

    clip, truths = held_out_clip
    masks = tmp_path / "masks"
    assert main([str(clip), "-o", str(tmp_path / "o.mp4"), "--model", str(demo_model), "--masks", str(masks), "-q",
                 *extra]) == 0
    preds = np.stack([read_mask_png(masks / f"{i:06d}.png") for i in range(len(truths))])
    miou = _miou(preds, truths)
    assert miou >= 0.8, miou
    from conftest import decode

    reference = np.stack(Segmenter.load(ModelConfig(name=str(demo_model), device="cpu"))(decode(clip)[0]))
    assert np.array_equal(preds, reference)  # the exact labels of a direct call on the decoded frames


def test_demo_model_miou_through_the_python_api(held_out_clip, segmenter):
    from streamseg import open_source

    clip, truths = held_out_clip
    with open_source(str(clip)) as source:
        results = list(segmenter.iter_results(source, batch_size=4))
    assert [r.frame.index for r in results] == list(range(len(truths)))
    assert _miou(np.stack([r.label_map for r in results]), truths) >= 0.8
