"""--style, --labels, --classes/--exclude and --keep, on the demo model's view of the sample still."""

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_IMAGE
from PIL import Image

from streamseg.cli import main
from streamseg.config import ModelConfig, RenderConfig, Style
from streamseg.errors import InputError
from streamseg.frames import Frame
from streamseg.models.segmenter import Segmenter
from streamseg.render.renderer import Renderer, blend, palette

STYLES = [s.value for s in Style]


@pytest.fixture(scope="module")
def still(demo_model):
    seg = Segmenter.load(ModelConfig(name=str(demo_model), device="cpu"))
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    (result,) = seg.segment([Frame(index=0, image=image)])
    return seg, result


def _render(seg, result, **kw):
    return Renderer(RenderConfig(**kw), seg.id2label, seg.num_labels)(result)


def test_every_style_renders_and_differs_from_the_others(still):
    seg, result = still
    out = {s: _render(seg, result, style=s, keep=("person",)) for s in STYLES}
    for a in STYLES:
        for b in STYLES:
            if a < b:
                assert out[a].shape != out[b].shape or not np.array_equal(out[a], out[b]), (a, b)
    h, w = result.label_map.shape
    assert out["side-by-side"].shape == (h, 2 * w, 3)
    assert np.array_equal(out["side-by-side"][:, :w], result.frame.image)
    assert np.array_equal(out["side-by-side"][:, w:], out["fill"])
    assert np.array_equal(out["mask"], palette(seg.num_labels)[result.label_map])


def test_contour_draws_only_on_class_boundaries(still):
    seg, result = still
    img = _render(seg, result, style="contour")
    changed = (img != result.frame.image).any(-1)
    lm = result.label_map
    differs = np.zeros(lm.shape, bool)  # a 4-neighbour has another class
    differs[:, :-1] |= lm[:, :-1] != lm[:, 1:]
    differs[:, 1:] |= lm[:, 1:] != lm[:, :-1]
    differs[:-1] |= lm[:-1] != lm[1:]
    differs[1:] |= lm[1:] != lm[:-1]
    interior = ~cv2.dilate(differs.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert changed.any() and not (changed & interior).any()


@pytest.mark.parametrize("style", ["replace-background", "blur-background"])
def test_keep_person_leaves_exactly_the_person_pixels(still, tmp_path, demo_model, style):
    seg, result = still
    out = tmp_path / "o.png"
    assert main([str(SAMPLE_IMAGE), "-o", str(out), "--model", str(demo_model), "--style", style,
                 "--keep", "person", "--background", "#102030", "-q"]) == 0
    img = np.asarray(Image.open(out))
    person = result.label_map == 5  # the demo model's "person"
    assert person.sum() > 500
    assert np.array_equal(img[person], result.frame.image[person])
    rest = ~person
    if style == "replace-background":
        assert (img[rest] == [0x10, 0x20, 0x30]).all()
    else:
        assert np.abs(img[rest].astype(int) - result.frame.image[rest]).mean() > 2


def test_classes_and_exclude_filter_what_is_drawn(still):
    seg, result = still
    image, lm = result.frame.image, result.label_map
    only_cars = _render(seg, result, classes=("car",))
    no_sky = _render(seg, result, exclude=("sky", "0"))
    car, sky = lm == 6, lm == 0
    assert np.array_equal(only_cars[~car], image[~car])
    assert np.array_equal(only_cars[car], blend(image, lm, palette(7), 0.4)[car])
    assert np.array_equal(no_sky[sky], image[sky]) and not np.array_equal(no_sky[~sky], image[~sky])


def test_labels_are_written_inside_their_segments(still):
    seg, result = still
    plain = _render(seg, result)
    labelled = _render(seg, result, labels=True)
    changed = (plain != labelled).any(-1)
    assert changed.sum() > 300
    # Every changed pixel is text drawn around a segment's interior point: none in the image's outer 2-pixel frame.
    assert not changed[:2].any() and not changed[-2:].any()


@pytest.mark.parametrize("argv, message", [
    (["--style", "blur-background"], "needs --keep"),
    (["--classes", "unicorn"], "--classes: unknown class 'unicorn'; this model's classes include: sky"),
    (["--style", "replace-background", "--keep", "person", "--background", "nope.png"], "background image not found"),
])
def test_style_errors_are_bad_input(argv, message, demo_model, tmp_path, capsys):
    assert main([str(SAMPLE_IMAGE), "-o", str(tmp_path / "o.png"), "--model", str(demo_model), "-q", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_renderer_refuses_unknown_keep_classes():
    with pytest.raises(InputError, match="--keep: unknown class 'ghost'"):
        Renderer(RenderConfig(style="blur-background", keep=("ghost",)), {0: "sky"}, 1)
