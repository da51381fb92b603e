"""Colours: one per class id, the same in every frame and every run, and one per instance track."""

from __future__ import annotations

import functools

import numpy as np

PALETTE_SEED = 42


@functools.lru_cache(maxsize=8)
def palette(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, one per class id, from a fixed seed.

    Class ``i`` has the same colour for every ``n > i``, in every frame and every run.
    """
    size = max(256, 1 << (max(n, 1) - 1).bit_length())
    colours = np.random.default_rng(PALETTE_SEED).integers(0, 256, size=(size, 3), dtype=np.uint8)
    out = colours[:n].copy()
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def instance_palette() -> np.ndarray:
    """``(1024, 3)`` uint8 RGB colours for instance/panoptic tracks (track id modulo 1024), none too dark."""
    out = np.random.default_rng(PALETTE_SEED + 1).integers(40, 256, (1024, 3), dtype=np.uint8)
    out.setflags(write=False)
    return out
