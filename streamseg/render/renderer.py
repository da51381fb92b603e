"""Draw segmentation results on frames: the class filters (``--classes``, ``--exclude``, ``--keep``), instance
colours that follow their tracks, the style (:mod:`streamseg.render.styles`) and the marks over it
(:mod:`streamseg.render.marks`). One renderer per source, called by one thread."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from streamseg.config import RenderConfig, Style
from streamseg.errors import InputError, short_message
from streamseg.frames import SegmentationResult
from streamseg.models.tracking import SegmentTracker

from .marks import draw_fps, draw_legend, outlined_text
from .palette import instance_palette, palette
from .styles import KEEPS_CLASSES, STYLES, Backdrop, blend, blur_kernel_size

__all__ = ["Renderer", "blend", "blur_kernel_size", "palette", "resolve_classes"]


def resolve_classes(names: tuple[str, ...], id2label: Mapping[int, str], flag: str) -> set[int]:
    """Class ids for names or ids given on the command line; unknown ones are an :class:`InputError`."""
    by_name = {v.lower(): k for k, v in id2label.items()}
    out = set()
    for name in names:
        key = name.strip()
        if key.isdigit() and (int(key) in id2label or not id2label):
            out.add(int(key))
        elif key.lower() in by_name:
            out.add(by_name[key.lower()])
        else:
            known = ", ".join(list(id2label.values())[:12])
            raise InputError(f"{flag}: unknown class {name!r}; this model's classes include: {known}")
    return out


def _background(spec: str, shape: tuple[int, ...]) -> np.ndarray:
    if spec.startswith("#") and len(spec) == 7:
        try:
            rgb = [int(spec[i:i + 2], 16) for i in (1, 3, 5)]
        except ValueError:
            raise InputError(f"invalid background colour {spec!r}: expected #RRGGBB") from None
        return np.broadcast_to(np.array(rgb, np.uint8), shape)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"background image not found: {spec} (or give a colour as #RRGGBB)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((shape[1], shape[0])))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"--background {spec}: not a readable image ({short_message(exc, 160)})") from exc


class Renderer:
    """Turns a :class:`SegmentationResult` into an annotated RGB picture, in the configured style.

    Semantic classes always have their class colour; instance/panoptic segments have a colour
    of their own that follows them from frame to frame: their track id, or when the results carry none, one
    from a :class:`~streamseg.models.tracking.SegmentTracker` of the renderer's own. Stateful
    for that reason: one thread renders, frame after frame.
    """

    def __init__(self, config: RenderConfig, id2label: Mapping[int, str], num_labels: int) -> None:
        self.config = config
        self.id2label = dict(id2label)
        self.colours = palette(max(num_labels, 1))
        n = max(num_labels, len(self.colours), 1)
        self._shown = np.ones(n + 1, bool)  # index -1 (void) is the last entry: never shown
        self._shown[-1] = False
        if config.classes:
            self._shown[:-1] = False
            self._shown[list(resolve_classes(config.classes, self.id2label, "--classes"))] = True
        if config.exclude:
            self._shown[list(resolve_classes(config.exclude, self.id2label, "--exclude"))] = False
        self._shows_all = bool(self._shown[:-1].all())
        self._keep = np.zeros(n + 1, bool)
        if config.keep:
            self._keep[list(resolve_classes(config.keep, self.id2label, "--keep"))] = True
        self._backgrounds: dict[tuple[int, ...], np.ndarray] = {}
        self._instances = SegmentTracker()  # for results without track ids
        if config.style is Style.REPLACE_BACKGROUND:
            _background(config.background, (2, 2, 3))  # a bad colour or missing file fails now, not mid-run

    def shown_mask(self) -> np.ndarray:
        """Whether each class id is drawn (--classes/--exclude); the last entry stands for -1 (never)."""
        return self._shown.copy()

    def keep_mask(self) -> np.ndarray:
        """Whether each class id is kept as it is by blur-/replace-background (--keep)."""
        return self._keep.copy()

    def background(self, shape: tuple[int, ...]) -> np.ndarray:
        """The replace-background picture for frames of ``shape`` (H, W, 3)."""
        rest = self._backgrounds.get(shape)
        if rest is None:
            rest = self._backgrounds.setdefault(shape, _background(self.config.background, shape))
        return rest

    def shows(self, label_id: int) -> bool:
        """Whether --classes/--exclude let this class be drawn."""
        return 0 <= label_id < len(self._shown) - 1 and bool(self._shown[label_id])

    def visible_labels(self, result: SegmentationResult) -> np.ndarray:
        """The label map with classes filtered out by --classes/--exclude set to -1."""
        lm = result.label_map
        if self._shows_all:  # nothing to filter: -1 (no segment) is -1 already
            return lm
        lm = lm.astype(np.int32, copy=False)
        return np.where(np.take(self._shown, lm), lm, -1)

    def __call__(self, result: SegmentationResult, fps: float | None = None) -> np.ndarray:
        cfg = self.config
        image = result.frame.image
        labels = self.visible_labels(result)
        if result.drawn is not None and result.segment_map is None:
            # blended on the model's device (streamseg.render.device: fill, mask, blur- and replace-background
            # only): the host-side marks are left
            return self._annotate(result.drawn, result, labels, fps)
        ids, colours = self._colouring(result, labels)
        keep = self._keep[result.label_map.astype(np.int32, copy=False)] if cfg.style in KEEPS_CLASSES else None
        img = STYLES[cfg.style](image, ids, colours, Backdrop(keep, self.background, cfg.alpha))
        return self._annotate(img, result, labels, fps)

    def _colouring(self, result: SegmentationResult, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each pixel is coloured by (its class, or its segment's track colour) and the colour of each."""
        if result.segment_map is None:
            return labels, self.colours
        if len(result.track_ids) == len(result.segment_info):  # tracked: colours follow the track ids
            tracks = {int(i): t for (i, _, _), t in zip(result.segment_info, result.track_ids)}
        else:
            tracks = self._instances(result.segment_map, result.segment_info)
        ids = np.where(labels >= 0, result.segment_map, -1)
        colours = np.zeros((max([*tracks, int(ids.max(initial=0))]) + 1, 3), np.uint8)
        shades = instance_palette()
        for seg_id, track in tracks.items():
            colours[seg_id] = shades[track % len(shades)]
        return ids, colours

    def _annotate(self, img: np.ndarray, result: SegmentationResult, labels: np.ndarray, fps: float | None) -> np.ndarray:
        """Segment labels, the legend and the fps text, in place over a drawn picture."""
        cfg = self.config
        if cfg.labels:
            self._draw_labels(img, result, labels)
        if cfg.legend:
            flat = labels.ravel()
            present = np.flatnonzero(np.bincount(flat[flat >= 0], minlength=len(self.colours)))
            draw_legend(img, present, self.colours, result.id2label or self.id2label)  # prompts may change
        if cfg.show_fps and fps is not None:
            draw_fps(img, fps)
        return img

    def _draw_labels(self, img: np.ndarray, result: SegmentationResult, labels: np.ndarray) -> None:
        """Each visible segment's label at its most interior point."""
        ids = result.segment_map if result.segment_map is not None else labels
        scale = max(0.35, min(img.shape[:2]) / 1000)
        for seg in result.segments():
            if not self.shows(seg.label_id) or seg.area < 50:
                continue
            mask = np.pad((ids == seg.id).astype(np.uint8), 1)  # the frame's edge counts as outside
            dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
            y, x = np.unravel_index(int(dist.argmax()), dist.shape)
            y, x = y - 1, x - 1
            text = seg.label if seg.track_id is None else f"{seg.label} #{seg.track_id}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            outlined_text(img, text, (int(x) - tw // 2, int(y) + th // 2), scale)
