import numpy as np

from streamseg.config import RenderConfig
from streamseg.frames import Frame, SegmentationResult
from streamseg.render.renderer import Renderer, blend, palette


def test_palette_is_fixed_and_the_same_for_every_class_count():
    assert np.array_equal(palette(10), palette(150)[:10])
    assert np.array_equal(palette(3), np.random.default_rng(42).integers(0, 256, (256, 3), dtype=np.uint8)[:3])
    assert palette(1000).shape == (1000, 3)


def test_blend_is_the_alpha_mix_of_frame_and_class_colour():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, (20, 30)).astype(np.uint8)
    colours = palette(7)
    out = blend(img, labels, colours, 0.4)
    expected = 0.6 * img.astype(np.float64) + 0.4 * colours[labels].astype(np.float64)
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-6
    assert np.array_equal(blend(img, labels, colours, 0.0), img)
    assert np.array_equal(blend(img, labels, colours, 1.0), colours[labels])


def _result(labels):
    img = np.full(labels.shape + (3,), 100, np.uint8)
    return SegmentationResult(frame=Frame(index=0, image=img), label_map=labels)


def test_legend_and_fps_draw_only_when_asked():
    labels = np.zeros((120, 200), np.uint8)
    labels[:, 100:] = 2
    plain = Renderer(RenderConfig(), {0: "sky", 2: "road"}, 3)(_result(labels))
    legend = Renderer(RenderConfig(legend=True), {0: "sky", 2: "road"}, 3)(_result(labels))
    fps = Renderer(RenderConfig(show_fps=True), {0: "sky", 2: "road"}, 3)(_result(labels), fps=24.0)
    changed_legend = np.argwhere((legend != plain).any(-1))
    changed_fps = np.argwhere((fps != plain).any(-1))
    assert len(changed_legend) > 50 and changed_legend[:, 1].max() < 100  # top left
    assert len(changed_fps) > 20 and changed_fps[:, 1].min() > 100 and changed_fps[:, 0].max() < 40  # top right
    # Swatches in the class colours, one per visible class (ids 0 and 2).
    colours = palette(3)
    for cid in (0, 2):
        assert (legend == colours[cid]).all(-1).sum() >= 25
    assert not (legend == colours[1]).all(-1).any()


def _panoptic(index, boxes):
    """A synthetic panoptic result: ``boxes`` maps segment id -> (label id, x0, x1)."""
    seg_map = np.full((40, 100), -1, np.int32)
    label_map = np.full((40, 100), -1, np.int32)
    for seg_id, (label, x0, x1) in boxes.items():
        seg_map[:, x0:x1] = seg_id
        label_map[:, x0:x1] = label
    frame = Frame(index=index, image=np.full((40, 100, 3), 128, np.uint8))
    infos = tuple((seg_id, label, 0.99) for seg_id, (label, _, _) in boxes.items())
    return SegmentationResult(frame=frame, label_map=label_map, task="panoptic", segment_map=seg_map,
                              segment_info=infos, id2label={0: "person", 1: "car"})


def test_instances_keep_their_colour_while_they_persist():
    r = Renderer(RenderConfig(style="mask"), {0: "person", 1: "car"}, 2)
    first = r(_panoptic(0, {1: (0, 0, 20), 2: (0, 50, 70)}))
    # Next frame: the two people moved a little and their ids swapped; a car appeared.
    second = r(_panoptic(1, {2: (0, 2, 22), 1: (0, 52, 72), 3: (1, 80, 95)}))
    assert (first[:, 5] == second[:, 7]).all() and (first[:, 55] == second[:, 57]).all()
    assert not (first[0, 5] == first[0, 55]).all()  # two people, two colours
    car = second[0, 85]
    assert not (car == second[0, 7]).all() and not (car == second[0, 57]).all()
    assert (first[:, 30] == 0).all()  # no segment: black in the mask style


def test_an_instance_that_vanishes_does_not_lend_its_colour_to_another_class():
    r = Renderer(RenderConfig(style="mask"), {0: "person", 1: "car"}, 2)
    first = r(_panoptic(0, {1: (0, 0, 30)}))
    second = r(_panoptic(1, {1: (1, 0, 30)}))  # same place, now a car
    assert not (first[0, 10] == second[0, 10]).all()
