"""Pure tensor operations, independent of any model: labels from low-resolution scores, device-agnostic, no
state; and finished pictures copied back from the device."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch


@functools.lru_cache(maxsize=16)
def _axis(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices and weights along one axis, exactly as ``F.interpolate(align_corners=False)``."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = (src - i0).float()
    return i0.to(device), i1.to(device), frac.to(device)


@functools.lru_cache(maxsize=16)
def _cells(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each low-resolution cell along one axis, the output positions it covers and their weights.

    Returns ``(slots, frac)``, both ``(n_in, S)``: output indices (-1 for padding) and the
    bilinear weight of the cell's far corner at each.
    """
    i0, _, frac = _axis(n_out, n_in, torch.device("cpu"))
    counts = torch.bincount(i0, minlength=n_in)
    width = int(counts.max())
    slots = torch.full((n_in, width), -1, dtype=torch.long)
    fracs = torch.zeros((n_in, width))
    start = torch.cumsum(counts, 0) - counts
    offset = torch.arange(n_out) - start[i0]
    slots[i0, offset] = torch.arange(n_out)
    fracs[i0, offset] = frac
    return slots.to(device), fracs.to(device)


def upsampled_argmax(logits: torch.Tensor, height: int, width: int, k: int = 2) -> torch.Tensor:
    """``argmax(interpolate(logits, (height, width), bilinear))`` without the full-size ``(C, H, W)`` tensor.

    Work is done per low-resolution cell (the square between four neighbouring logits).
    A cell whose four corners share their best class gives every pixel in it that class:
    a convex mix of vectors with the same argmax has that argmax. In the other cells the
    pixels are interpolated, but only for the ``k`` best classes of each corner.
    ``logits`` is ``(C, h, w)``; the result is ``(height, width)`` int64.
    """
    c, h, w = logits.shape
    if (h, w) == (height, width):
        return logits.argmax(0)
    dev = logits.device
    k = min(k, c)
    top = logits.topk(k, dim=0).indices  # (k, h, w), best first
    best = top[0]
    y0, _, _ = _axis(height, h, dev)
    x0, _, _ = _axis(width, w, dev)
    out = best[y0][:, x0]  # each pixel's top-left corner class: right wherever its cell agrees
    yn = torch.clamp(torch.arange(h, device=dev) + 1, max=h - 1)  # each cell's lower / right corner
    xn = torch.clamp(torch.arange(w, device=dev) + 1, max=w - 1)
    corners = torch.stack([best, best[:, xn], best[yn], best[yn][:, xn]])  # (4, h, w)
    cy, cx = (corners != best).any(0).nonzero(as_tuple=True)
    if cy.numel():
        pos = torch.stack([cy * w + cx, cy * w + xn[cx], yn[cy] * w + cx, yn[cy] * w + xn[cx]], 1)  # (M, 4)
        cand = top.reshape(k, h * w)[:, pos].permute(1, 0, 2).reshape(len(cy), 4 * k)  # (M, 4k)
        vals = logits.reshape(c, h * w)[cand[:, :, None], pos[:, None, :]]  # (M, 4k, 4 corners)
        rows, fy = _cells(height, h, dev)
        cols, fx = _cells(width, w, dev)
        fy, fx = fy[cy][:, :, None, None], fx[cx][:, None, :, None]  # (M, R, 1, 1), (M, 1, C, 1)
        v00, v01, v10, v11 = (vals[:, None, None, :, j] for j in range(4))  # (M, 1, 1, 4k)
        upper = v00 + fx * (v01 - v00)
        lower = v10 + fx * (v11 - v10)
        scores = upper + fy * (lower - upper)  # (M, R, C, 4k)
        labels = cand.gather(1, scores.flatten(1, 2).argmax(-1)).view(len(cy), rows.shape[1], cols.shape[1])
        r, q = rows[cy][:, :, None], cols[cx][:, None, :]  # output rows / columns of each slot
        valid = (r >= 0) & (q >= 0)
        r, q = r.expand_as(labels)[valid], q.expand_as(labels)[valid]
        out[r, q] = labels[valid]
    return out


def download(pictures: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Device pictures -> host arrays: one copy each, into pinned memory and without blocking on CUDA,
    then one wait for the whole batch."""
    if not pictures:
        return []
    if pictures[0].device.type != "cuda":
        return [p.contiguous().numpy() for p in pictures]
    hosts = [torch.empty(p.shape, dtype=p.dtype, pin_memory=True) for p in pictures]
    for host, picture in zip(hosts, pictures):
        host.copy_(picture, non_blocking=True)
    torch.cuda.current_stream(pictures[0].device).synchronize()
    return [h.numpy() for h in hosts]
