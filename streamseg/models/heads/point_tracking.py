"""Click to track: a SAM2-video-family model (SAM 2.1, EdgeTAM) follows the objects it is shown, live.

``--point X,Y`` (repeatable, source pixels) starts an object at each point on each source's
first frame; the live view adds one where it is clicked (``POST /point``) and removes the one under
a right-click. Each object keeps its id (its track id: colours, labels, JSON) while it is tracked.

Live, one frame at a time, through the model's streaming inference session (``Sam2VideoModel(
inference_session, frame_idx, frame)``), one session per source. The image encoder runs once per
batch on the stacked frames of every source (:meth:`PointTrackerHead.forward`); each frame's
features are handed to its source's session through the session's own feature cache, so the
model does not encode it again.

**Bounded memory.** A session keeps every frame and every output for ever (a 1-hour stream runs
out of memory). After each frame the session is pruned (:func:`prune`) to what the model reads
next: the outputs of the last ``max(num_maskmem, max_object_pointers_in_encoder) - 1`` frames (their
memories and object pointers), the conditioning outputs of the frames where objects were clicked,
the clicks themselves, and no stored frames (the features come from the cache). Pruned and
unpruned sessions give identical masks (tested over 40 frames).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from streamseg.config import Task
from streamseg.errors import InputError, short_message
from streamseg.frames import Frame, SegmentationResult

from .base import HeadBase

log = logging.getLogger(__name__)

MAX_OBJECTS = 64  # objects tracked per source at most (each costs a decoder pass per frame)
VIDEO_TYPES = {"sam2_video": "Sam2VideoModel", "sam2": "Sam2VideoModel", "edgetam_video": "EdgeTamVideoModel",
               "edgetam": "EdgeTamVideoModel"}


def parse_point(text: str) -> tuple[float, float]:
    """``"320,180"`` -> ``(320.0, 180.0)``."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"invalid --point {text!r}: expected X,Y in source pixels, e.g. --point 320,180") from None
    return x, y


def prune(session, frame_idx: int, keep: int) -> None:
    """Drop what the model will not read again after ``frame_idx``: stored frames, and the non-conditioning
    outputs and tracking marks of frames more than ``keep`` frames back. Clicked (conditioning) frames stay."""
    frames = session.processed_frames
    if frames:
        for k in [k for k in frames if k < frame_idx]:
            del frames[k]
    oldest = frame_idx - keep
    for outputs in session.output_dict_per_obj.values():
        old = outputs["non_cond_frame_outputs"]
        for k in [k for k in old if k <= oldest]:
            del old[k]
    for tracked in session.frames_tracked_per_obj.values():
        for k in [k for k in tracked if k <= oldest]:
            del tracked[k]


def session_bytes(session) -> int:
    """Bytes held by a session's tensors (frames, outputs, clicks, cache): what pruning keeps bounded."""
    seen: set[int] = set()

    def walk(value) -> int:
        if isinstance(value, torch.Tensor):
            if id(value) in seen:
                return 0
            seen.add(id(value))
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        return 0

    return walk([session.processed_frames or {}, session.output_dict_per_obj, session.point_inputs_per_obj,
                 session.mask_inputs_per_obj, session.cache._vision_features])


def _remove_object(session, obj_id: int) -> None:
    """Forget one object: its inputs and outputs, the others re-indexed (the session has no such call)."""
    old_idx = session._obj_id_to_idx.pop(obj_id)
    remaining = list(session._obj_id_to_idx)
    old_of = {obj: (old_idx if obj == obj_id else session._obj_id_to_idx[obj]) for obj in remaining}
    for name in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj"):
        per_obj = getattr(session, name)
        setattr(session, name, {new: per_obj[old_of[obj]] for new, obj in enumerate(remaining)})
    session._obj_id_to_idx.clear()
    session._obj_idx_to_id.clear()
    for new, obj in enumerate(remaining):
        session._obj_id_to_idx[obj] = new
        session._obj_idx_to_id[new] = obj
    session.obj_ids = remaining
    session.obj_with_new_inputs = [o for o in session.obj_with_new_inputs if o != obj_id]


@dataclass
class _Stream:
    """One source's streaming session."""

    session: object
    height: int
    width: int
    next_frame: int = 0
    last_ids: np.ndarray | None = None  # the last segment map (object index per pixel), for right-clicks
    last_objects: list[int] = field(default_factory=list)  # object id of each index in last_ids


class PointTrackerHead(HeadBase):
    """A SAM2-video-family model as a head: objects given by points, tracked per source. Owned by the inference
    thread; :meth:`add_point` and :meth:`remove_point` may be called from any thread (the live view)."""

    task = Task.INSTANCE
    tracks_itself = True  # results carry their own track ids (the object ids)

    def __init__(self, model: torch.nn.Module, *, image_size: int, points: Sequence[tuple[float, float]] = (),
                 prune: bool = True) -> None:
        self.model = self.eager_model = model
        self.image_size = image_size
        self.points = tuple(points)
        self.prune = prune
        config = model.config
        self.keep = max(config.num_maskmem, config.max_object_pointers_in_encoder) - 1
        self.id2label = {0: "object"}
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[int, bool, float, float]] = []  # (source, add, x, y)
        self._next_id = 1
        self.changes = 0

    # -- clicks (any thread) ----------------------------------------------------------------------
    @property
    def point_control(self) -> PointTrackerHead:
        return self  # clicks on the live view: add_point, remove_point

    def add_point(self, x: float, y: float, source: int = 0) -> None:
        """Track a new object at source pixel ``(x, y)`` from that source's next frame on."""
        self._queue(source, True, x, y)

    def remove_point(self, x: float, y: float, source: int = 0) -> None:
        """Stop tracking the object under source pixel ``(x, y)`` (none there: nothing happens)."""
        self._queue(source, False, x, y)

    def _queue(self, source: int, add: bool, x: float, y: float) -> None:
        stream = self._streams.get(source)
        if stream is not None and not (0 <= x < stream.width and 0 <= y < stream.height):
            raise InputError(f"point {x:g},{y:g} is outside the {stream.width}x{stream.height} frame")
        with self._lock:
            self._pending.append((source, add, x, y))

    # -- the inference thread ---------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, object]:
        """The image encoder once on the stacked frames of every source; each frame's session runs in results()."""
        return pixel_values, self.model.get_image_features(pixel_values)

    def label_maps(self, outputs, sizes):  # pragma: no cover - results() is the path; labels need the frames
        raise NotImplementedError("point tracking needs the frames (their sources): use Segmenter.segment")

    def results(self, outputs, frames: Sequence[Frame], *, pictures=None, blender=None) -> list[SegmentationResult]:
        pixel_values, features = outputs
        out = []
        for i, frame in enumerate(frames):
            stream = self._stream(frame)
            k = stream.next_frame
            stream.next_frame += 1
            self._apply_clicks(frame.source, stream, k)
            session = stream.session
            if session.get_obj_num() == 0:
                out.append(self._result(frame, stream, None, []))
                continue
            session.cache.cache_vision_features(k, {
                "vision_feats": [f[:, i:i + 1] for f in features.fpn_hidden_states],
                "vision_pos_embeds": [p[:, i:i + 1] for p in features.fpn_position_encoding]})
            output = self.model(inference_session=session, frame_idx=k, frame=pixel_values[i:i + 1])
            if self.prune:
                prune(session, k, self.keep)
            out.append(self._result(frame, stream, output, list(output.object_ids)))
        return out

    def _stream(self, frame: Frame) -> _Stream:
        stream = self._streams.get(frame.source)
        if stream is None:
            from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

            param = next(self.model.parameters())
            h, w = frame.image.shape[:2]
            session = Sam2VideoInferenceSession(video_height=h, video_width=w, inference_device=param.device,
                                                inference_state_device=param.device,
                                                video_storage_device=param.device, dtype=param.dtype)
            stream = self._streams[frame.source] = _Stream(session, h, w)
            for x, y in self.points:  # --point: on every source's first frame
                if not (0 <= x < w and 0 <= y < h):
                    raise InputError(f"--point {x:g},{y:g} is outside the {w}x{h} frame of source {frame.source}")
                with self._lock:
                    self._pending.append((frame.source, True, x, y))
        return stream

    def _apply_clicks(self, source: int, stream: _Stream, frame_idx: int) -> None:
        with self._lock:
            mine = [p for p in self._pending if p[0] == source]
            self._pending = [p for p in self._pending if p[0] != source]
        session = stream.session
        for _, add, x, y in mine:
            if not add:
                hit = -1
                if stream.last_ids is not None:
                    hit = int(stream.last_ids[min(int(y), stream.height - 1), min(int(x), stream.width - 1)])
                if hit >= 0:
                    obj_id = stream.last_objects[hit]
                    _remove_object(session, obj_id)
                    self.changes += 1
                    log.info("source %d: stopped tracking object %d", source, obj_id)
                continue
            if not (0 <= x < stream.width and 0 <= y < stream.height):  # asked before the source's first frame
                log.warning("source %d: point %g,%g is outside the %dx%d frame; ignored", source, x, y, stream.width,
                            stream.height)
                continue
            if session.get_obj_num() >= MAX_OBJECTS:
                log.warning("source %d tracks %d objects already; click ignored", source, MAX_OBJECTS)
                continue
            obj_id, self._next_id = self._next_id, self._next_id + 1
            obj_idx = session.obj_id_to_idx(obj_id)
            scale = torch.tensor([self.image_size / stream.width, self.image_size / stream.height])
            coords = (torch.tensor([[[[x, y]]]], dtype=torch.float32) * scale)
            session.add_point_inputs(obj_idx, frame_idx, {"point_coords": coords,
                                                          "point_labels": torch.ones(1, 1, 1, dtype=torch.int32)})
            session.remove_mask_inputs(obj_idx, frame_idx)
            session.obj_with_new_inputs = [*session.obj_with_new_inputs, obj_id]
            self.changes += 1
            log.info("source %d: tracking object %d from %g,%g", source, obj_id, x, y)

    def _result(self, frame: Frame, stream: _Stream, output, object_ids: list[int]) -> SegmentationResult:
        h, w = stream.height, stream.width
        if output is None or not object_ids:
            ids = np.full((h, w), -1, np.int32)
            stream.last_ids, stream.last_objects = ids, []
            return SegmentationResult(frame=frame, label_map=ids, segment_map=ids, id2label=self.id2label,
                                      task="instance")
        logits = F.interpolate(output.pred_masks.float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        present = output.object_score_logits.float().reshape(-1) > 0
        logits[~present] = float("-inf")
        best = logits.max(0)
        ids = torch.where(best.values > 0, best.indices, -1).to(torch.int32).cpu().numpy()
        scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).tolist()
        visible = np.unique(ids[ids >= 0]).tolist()
        stream.last_ids, stream.last_objects = ids, list(object_ids)
        return SegmentationResult(frame=frame, label_map=np.where(ids >= 0, 0, -1).astype(np.int32), segment_map=ids,
                                  segment_info=tuple((j, 0, scores[j]) for j in visible), id2label=self.id2label,
                                  task="instance", track_ids=tuple(object_ids[j] for j in visible))

    def reset(self) -> None:
        """Forget every source's session (between unrelated videos); --point objects start again."""
        self._streams.clear()
        with self._lock:
            self._pending.clear()


def load_point_head(name: str, hub: dict, config, device: torch.device, dtype: torch.dtype,
                    model_type: str) -> PointTrackerHead:
    """The :class:`PointTrackerHead` of a SAM2-video-family model (``model_type`` in :data:`VIDEO_TYPES`)."""
    import transformers

    from streamseg.errors import ModelLoadError

    try:
        model = getattr(transformers, VIDEO_TYPES[model_type]).from_pretrained(name, **hub)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded: {short_message(exc, 200)}") from exc
    model = model.to(device=device, dtype=dtype).eval()
    if not config.points:
        log.warning("no --point: nothing is tracked until a click on the --serve page")
    return PointTrackerHead(model, image_size=int(model.config.image_size), points=config.points)
