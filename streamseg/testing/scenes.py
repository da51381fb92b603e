"""Synthetic street scenes with a known class for every pixel.

Used to make the sample clip, to train the offline demo model, and by the
tests to measure that model on frames it has never seen. Everything is drawn
from a seeded :class:`numpy.random.Generator`, so a seed gives the same scene
on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("sky", "building", "road", "grass", "tree", "person", "car")
SKY, BUILDING, ROAD, GRASS, TREE, PERSON, CAR = range(len(CLASSES))

_CAR_COLOURS = np.array(
    [(200, 30, 30), (30, 60, 180), (230, 230, 230), (25, 25, 25), (160, 165, 170),
     (230, 190, 20), (20, 120, 60), (120, 20, 90)], dtype=np.float32)
_SKIN = np.array([(240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40)], dtype=np.float32)


@dataclass
class _Mover:
    kind: int
    x: float
    y: float  # bottom edge (feet / wheels)
    size: float  # height for people, width for cars
    vx: float
    colour: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


class StreetScene:
    """One randomly laid-out street; :meth:`render` draws it at time ``t`` (frames).

    The background is fixed for the scene; cars and people move, so consecutive
    frames make a video. ``render`` returns ``(rgb uint8 HxWx3, labels uint8 HxW)``.
    """

    def __init__(self, seed: int, width: int = 640, height: int = 360) -> None:
        self.width, self.height = width, height
        self._rng = np.random.default_rng(seed)
        self._background, self._bg_labels = self._draw_background()
        self._movers = self._spawn_movers()

    # -- background -----------------------------------------------------------------
    def _draw_background(self) -> tuple[np.ndarray, np.ndarray]:
        rng, h, w = self._rng, self.height, self.width
        img = np.zeros((h, w, 3), np.float32)
        lab = np.zeros((h, w), np.uint8)
        horizon = int(h * rng.uniform(0.35, 0.5))
        self._horizon = horizon

        # Sky: vertical gradient with soft clouds.
        top = np.array([rng.uniform(60, 110), rng.uniform(110, 160), rng.uniform(200, 245)], np.float32)
        bottom = np.array([rng.uniform(170, 200), rng.uniform(200, 225), rng.uniform(230, 250)], np.float32)
        ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        img[:] = top * (1 - ramp) + bottom * ramp
        clouds = np.clip(_noise(rng, h, w, 60) * 1.6 - 0.3, 0, 1)[..., None]
        img = img * (1 - clouds * 0.8) + 245 * clouds * 0.8
        lab[:] = SKY

        # Buildings standing on the horizon, with rows of windows.
        x = int(rng.uniform(-40, 0))
        while x < w:
            bw = int(rng.uniform(0.08, 0.2) * w)
            bh = int(rng.uniform(0.1, 0.3) * h)
            y0 = max(0, horizon - bh)
            base = rng.uniform(90, 170)
            tint = np.array([base + rng.uniform(-10, 25), base, base - rng.uniform(0, 25)], np.float32)
            x0, x1 = max(0, x), min(w, x + bw)
            if x1 > x0 and rng.uniform() < 0.85:
                img[y0:horizon, x0:x1] = tint
                win = np.array([rng.uniform(40, 80), rng.uniform(60, 100), rng.uniform(90, 140)], np.float32)
                step_x, step_y = int(rng.uniform(10, 16)), int(rng.uniform(12, 18))
                for wy in range(y0 + 5, horizon - 8, step_y):
                    for wx in range(x0 + 4, x1 - 7, step_x):
                        img[wy:wy + step_y // 2, wx:wx + step_x // 2] = win + rng.uniform(-15, 35)
                lab[y0:horizon, x0:x1] = BUILDING
            x += bw + int(rng.uniform(0, 0.05) * w)

        # Ground: grass with a fine texture, then a road band with lane marks.
        grass = np.array([rng.uniform(50, 90), rng.uniform(120, 160), rng.uniform(40, 70)], np.float32)
        tex = (_noise(rng, h, w, 3) * 18 + _noise(rng, h, w, 25) * 14)[..., None]
        img[horizon:] = grass + tex[horizon:] * np.array([0.6, 1.0, 0.5], np.float32)
        lab[horizon:] = GRASS
        road_top = int(horizon + rng.uniform(0.15, 0.3) * (h - horizon))
        road_bot = int(road_top + rng.uniform(0.35, 0.5) * (h - horizon))
        road_bot = min(h, road_bot)
        grey = rng.uniform(65, 95)
        fine = rng.normal(0, 6, (road_bot - road_top, w, 1)).astype(np.float32)
        img[road_top:road_bot] = grey + fine
        lab[road_top:road_bot] = ROAD
        mid = (road_top + road_bot) // 2
        dash = int(rng.uniform(25, 45))
        for lx in range(int(rng.uniform(0, dash)), w, dash * 2):
            img[mid - 2:mid + 2, lx:lx + dash] = 225
        self._road = (road_top, road_bot)

        # Trees: clusters of dark-green blobs rooted near the horizon.
        for _ in range(int(rng.integers(1, 5))):
            cx = rng.uniform(0, w)
            cy = horizon - rng.uniform(0, 0.08) * h
            r = rng.uniform(0.05, 0.1) * h
            mask = np.zeros((h, w), np.uint8)
            cv2.rectangle(mask, (int(cx - r * 0.12), int(cy - r)), (int(cx + r * 0.12), int(cy + r * 0.3)), 1, -1)
            for _ in range(7):
                bx, by = cx + rng.normal(0, r * 0.5), cy - r * 1.2 + rng.normal(0, r * 0.4)
                cv2.circle(mask, (int(bx), int(by)), int(r * rng.uniform(0.5, 0.8)), 1, -1)
            leaf = np.array([rng.uniform(20, 50), rng.uniform(70, 100), rng.uniform(20, 45)], np.float32)
            leaf_tex = (_noise(rng, h, w, 4) * 22)[..., None]
            sel = mask.astype(bool)
            img[sel] = (leaf + leaf_tex)[sel]
            lab[sel] = TREE
        return img, lab

    # -- moving objects ----------------------------------------------------------------
    def _spawn_movers(self) -> list[_Mover]:
        rng, h, w = self._rng, self.height, self.width
        road_top, road_bot = self._road
        movers: list[_Mover] = []
        for _ in range(int(rng.integers(1, 4))):
            width = rng.uniform(0.14, 0.24) * w
            movers.append(_Mover(CAR, rng.uniform(-0.1, 0.9) * w, rng.uniform(road_top + 0.35 * (road_bot - road_top), road_bot - 2),
                                 width, rng.choice([-1, 1]) * rng.uniform(2, 6),
                                 _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-15, 15, 3).astype(np.float32)))
        for _ in range(int(rng.integers(1, 5))):
            height = rng.uniform(0.16, 0.3) * h
            feet = rng.uniform(self._horizon + height * 0.3, h - 2)
            movers.append(_Mover(PERSON, rng.uniform(0, w), feet, height, rng.choice([-1, 1]) * rng.uniform(0.5, 2),
                                 rng.uniform(30, 230, 3).astype(np.float32),
                                 _SKIN[rng.integers(len(_SKIN))]))
        movers.sort(key=lambda m: m.y)
        return movers

    def _draw_car(self, img: np.ndarray, lab: np.ndarray, m: _Mover, x: float, t: float = 0.0) -> np.ndarray:
        cw = m.size
        ch = cw * 0.42
        x0, yb = int(x), int(m.y)
        body = np.array([[x0, yb - int(ch * 0.25)], [x0, yb - int(ch * 0.6)], [x0 + int(cw * 0.05), yb - int(ch * 0.65)],
                         [x0 + int(cw * 0.25), yb - int(ch * 0.65)], [x0 + int(cw * 0.35), yb - ch],
                         [x0 + int(cw * 0.72), yb - ch], [x0 + int(cw * 0.85), yb - int(ch * 0.62)],
                         [x0 + int(cw), yb - int(ch * 0.55)], [x0 + int(cw), yb - int(ch * 0.25)]], np.int32)
        mask = np.zeros(lab.shape, np.uint8)
        cv2.fillPoly(mask, [body], 1)
        r = int(ch * 0.24)
        for wx in (x0 + int(cw * 0.2), x0 + int(cw * 0.8)):
            cv2.circle(mask, (wx, yb - r), r, 2, -1)
        window = np.array([[x0 + int(cw * 0.3), yb - int(ch * 0.62)], [x0 + int(cw * 0.38), yb - int(ch * 0.92)],
                           [x0 + int(cw * 0.7), yb - int(ch * 0.92)], [x0 + int(cw * 0.8), yb - int(ch * 0.62)]], np.int32)
        cv2.fillPoly(mask, [window], 3)
        img[mask == 1] = m.colour
        img[mask == 2] = (20, 20, 22)
        img[mask == 3] = (60, 80, 100)
        lab[mask > 0] = CAR
        return mask > 0

    def _draw_person(self, img: np.ndarray, lab: np.ndarray, m: _Mover, x: float, t: float) -> np.ndarray:
        ph = m.size
        cx, feet = int(x), int(m.y)
        mask = np.zeros(lab.shape, np.uint8)
        swing = int(np.sin(t * 0.4 + m.x) * ph * 0.06)
        leg_w = max(2, int(ph * 0.06))
        hip = feet - int(ph * 0.45)
        cv2.line(mask, (cx - leg_w, hip), (cx - leg_w + swing, feet), 3, leg_w * 2)
        cv2.line(mask, (cx + leg_w, hip), (cx + leg_w - swing, feet), 3, leg_w * 2)
        cv2.rectangle(mask, (cx - int(ph * 0.12), feet - int(ph * 0.82)), (cx + int(ph * 0.12), hip), 1, -1)
        cv2.line(mask, (cx - int(ph * 0.13), feet - int(ph * 0.78)), (cx - int(ph * 0.16) - swing, feet - int(ph * 0.5)), 2, leg_w + 1)
        cv2.line(mask, (cx + int(ph * 0.13), feet - int(ph * 0.78)), (cx + int(ph * 0.16) + swing, feet - int(ph * 0.5)), 2, leg_w + 1)
        cv2.circle(mask, (cx, feet - int(ph * 0.9)), max(2, int(ph * 0.09)), 2, -1)
        img[mask == 1] = m.colour
        img[mask == 2] = m.extra
        img[mask == 3] = m.colour * 0.35 + 20
        lab[mask > 0] = PERSON
        return mask > 0

    def render(self, t: float = 0.0, noise: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        img, lab, _, _ = self.render_instances(t, noise)
        return img, lab

    def render_instances(self, t: float = 0.0, noise: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """``(rgb, labels, instances, identities)``: ``instances`` holds each pixel's object number (-1: none,
        later objects drawn over earlier ones); ``identities`` maps that number to ``(mover, lap, class)``: an
        object that leaves one edge and comes back at the other is a new identity."""
        img = self._background.copy()
        lab = self._bg_labels.copy()
        inst = np.full(lab.shape, -1, np.int32)
        identities = {}
        w = self.width
        for k, m in enumerate(self._movers):
            span = w + m.size * 1.5
            pos = m.x + m.vx * t + m.size
            x = pos % span - m.size
            if m.kind == CAR:
                drawn = self._draw_car(img, lab, m, x)
            else:
                drawn = self._draw_person(img, lab, m, x, t)
            inst[drawn] = k
            identities[k] = (k, int(pos // span), m.kind)
        if noise:
            frame_rng = np.random.default_rng(int(t * 1000) + 7)
            img = img + frame_rng.normal(0, noise, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8), lab, inst, identities


def scene(seed: int, width: int = 640, height: int = 360, t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A single still scene: ``(rgb, labels)``."""
    return StreetScene(seed, width, height).render(t)
