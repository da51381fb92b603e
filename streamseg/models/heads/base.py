"""What every model family's head is to the :class:`~streamseg.models.segmenter.Segmenter` and to a run:
the declared contract (:class:`Head`), and :class:`HeadBase` with the defaults most heads keep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import numpy as np
import torch

from streamseg.config import Engine, Task
from streamseg.frames import Frame, SegmentationResult
from streamseg.roles import PointControl, PromptControl


class Head(Protocol):
    """What a model family does after pre-processing: the forward, and its outputs as results.

    Called by one thread (the inference thread), except the controls, which are thread-safe.
    """

    task: Task
    id2label: dict[int, str]
    num_labels: int
    model: torch.nn.Module  # what runs the forward (possibly compiled or exported)
    eager_model: torch.nn.Module  # the loaded model itself
    engine: Engine  # what runs the forward, after any fallback
    tracks_itself: bool  # results carry their own track ids (then the run adds none)
    draws_on_device: bool  # results() can blend each frame's style on the device (a DeviceBlender)
    prompt_control: PromptControl | None  # text prompts a live view may change (POST /prompt)
    point_control: PointControl | None  # objects a live view may add or remove by clicking (POST /point)

    def forward(self, pixel_values: torch.Tensor) -> object: ...

    def label_maps(self, outputs: object, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]: ...

    def results(self, outputs: object, frames: Sequence[Frame], *, pictures: Sequence[torch.Tensor] | None = None,
                blender: object | None = None) -> list[SegmentationResult]: ...

    def reset(self) -> None: ...


class HeadBase:
    """The defaults of :class:`Head` a family keeps unless it says otherwise: torch runs it, the run tracks
    its segments, it draws nothing on the device and takes no input while running."""

    engine: Engine = Engine.TORCH
    tracks_itself: ClassVar[bool] = False
    draws_on_device: ClassVar[bool] = False

    @property
    def prompt_control(self) -> PromptControl | None:
        return None

    @property
    def point_control(self) -> PointControl | None:
        return None
