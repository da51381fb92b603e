"""Blending on the model's device: the fill, mask, blur-background and replace-background styles in torch.

On a GPU the uploaded uint8 batch is already there after pre-processing, and so are the labels:
blending there and bringing back the finished frame costs one copy per frame, where the host
renderer needs the label map brought back and a pass of OpenCV over every pixel. Contours,
segment labels, the legend and the fps text stay on the host (:class:`~streamseg.render.renderer.Renderer`
draws them over the picture this module gives).

The arithmetic is the host renderer's: ``round((1 - alpha) * image + alpha * colour)`` for fill,
the class colour (black for no segment) for mask, and OpenCV's Gaussian kernel with its
reflect-101 border for blur-background, so both give the same pixels (to within 1) on any device.
Semantic results only: instance and panoptic colours follow segments from frame to frame on the host.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from streamseg.config import Style

from .styles import blur_kernel_size

STYLES = frozenset({Style.FILL, Style.MASK, Style.BLUR_BACKGROUND, Style.REPLACE_BACKGROUND})


class DeviceBlender:
    """Draws a style over batches of uint8 frames where they are, from label tensors on the same device.

    Built from a :class:`~streamseg.render.renderer.Renderer` (its colours, ``--classes``/``--exclude`` and
    ``--keep``), so what it draws is what the renderer would. Used by the inference thread only.
    """

    def __init__(self, renderer, device: torch.device) -> None:
        cfg = renderer.config
        if cfg.style not in STYLES:
            raise ValueError(f"style {cfg.style.value} is drawn on the host")
        self.style, self.alpha, self.device = cfg.style, float(cfg.alpha), device
        n = len(renderer.colours)
        # Lookups indexed by class id; the last entry stands for -1 (no segment).
        colours = np.zeros((n + 1, 3), np.uint8)
        colours[:n] = renderer.colours
        self._colours = torch.from_numpy(colours).to(device)
        shown = np.zeros(n + 1, bool)
        shown[:n] = renderer.shown_mask()[:n]
        self._shown = torch.from_numpy(shown).to(device)
        keep = np.zeros(n + 1, bool)
        keep[:n] = renderer.keep_mask()[:n]
        self._keep = torch.from_numpy(keep).to(device)
        self._renderer = renderer  # the replace-background picture, per frame size
        self._backgrounds: dict[tuple[int, int], torch.Tensor] = {}
        self._kernels: dict[int, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 pictures and ``(B, H, W)`` class ids -> ``(B, H, W, 3)`` uint8 drawn pictures."""
        n = len(self._colours) - 1
        ids = labels.long()
        ids = torch.where((ids >= 0) & (ids < n), ids, torch.full_like(ids, n))  # -1 and unknown ids: no colour
        if self.style in (Style.BLUR_BACKGROUND, Style.REPLACE_BACKGROUND):
            keep = self._keep[ids].unsqueeze(-1)
            rest = self._blurred(images) if self.style is Style.BLUR_BACKGROUND else self._background(images.shape[1:3])
            return torch.where(keep, images, rest.expand_as(images))
        visible = torch.where(self._shown[ids], ids, torch.full_like(ids, n))
        colour = self._colours[visible]  # (B, H, W, 3); black where nothing is drawn
        if self.style is Style.MASK:
            return colour
        mixed = images.float() * (1.0 - self.alpha) + colour.float() * self.alpha
        drawn = mixed.round_().clamp_(0, 255).to(torch.uint8)
        return torch.where((visible < n).unsqueeze(-1), drawn, images)

    def _blurred(self, images: torch.Tensor) -> torch.Tensor:
        """OpenCV's ``GaussianBlur(image, (k, k), 0)``: a separable kernel, reflect-101 borders."""
        k = blur_kernel_size(*images.shape[1:3])
        kernel = self._kernels.get(k)
        if kernel is None:
            import cv2

            kernel = torch.from_numpy(cv2.getGaussianKernel(k, 0).astype(np.float32).ravel()).to(self.device)
            self._kernels[k] = kernel
        x = images.permute(0, 3, 1, 2).float()
        pad = k // 2
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
        x = F.conv2d(x, kernel.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def _background(self, size: tuple[int, int]) -> torch.Tensor:
        picture = self._backgrounds.get(size)
        if picture is None:
            picture = torch.from_numpy(np.array(self._renderer.background((*size, 3)), dtype=np.uint8)).to(self.device)
            self._backgrounds[size] = picture
        return picture
