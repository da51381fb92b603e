"""The offline demo model in sample_media/: trained on synthetic streets, measured on scenes it never saw."""

import numpy as np
import pytest

from streamseg.config import ModelConfig
from streamseg.model import Segmenter
from streamseg.synthetic import CLASSES, StreetScene

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
