"""Make the sample media: a short street clip with an audio track, and a still.

    python sample_media/make_media.py

Writes ``street.mp4`` (640x360, 25 fps, 4 s, H.264 + AAC stereo) and ``street.jpg``
next to this file. The scene comes from :mod:`streamseg.synthetic`, so the true
class of every pixel is known; the same seed gives the same media.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from streamseg.testing.scenes import StreetScene

HERE = Path(__file__).resolve().parent
SEED = 7


def audio_track(seconds: float, rate: int = 44_100) -> np.ndarray:
    """Stereo float32 ``(2, N)``: a low engine hum with a passing two-tone horn."""
    t = np.arange(int(seconds * rate)) / rate
    hum = 0.15 * np.sin(2 * np.pi * 70 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    horn = (0.2 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 554 * t))
            * ((t % 2.0) < 0.35))
    pan = 0.5 + 0.5 * np.sin(2 * np.pi * t / seconds)
    mono = hum + horn
    return np.stack([mono * (1 - pan), mono * pan]).astype(np.float32)


def write_clip(path: Path, *, seed: int = SEED, seconds: float = 4.0, fps: int = 25,
               width: int = 640, height: int = 360, audio: bool = True) -> None:
    scene = StreetScene(seed, width, height)
    with av.open(str(path), mode="w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.codec_context.options = {"crf": "23", "preset": "slow"}
        a = None
        if audio:
            a = out.add_stream("aac", rate=44_100, layout="stereo")
            samples = audio_track(seconds)
            for start in range(0, samples.shape[1], 1024):
                chunk = np.ascontiguousarray(samples[:, start:start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 44_100, start, Fraction(1, 44_100)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
        for i in range(int(seconds * fps)):
            img, _ = scene.render(float(i))
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    write_clip(args.out / "street.mp4")
    img, _ = StreetScene(SEED + 1).render(30.0)
    Image.fromarray(img).save(args.out / "street.jpg", quality=92)
    print(f"wrote {args.out / 'street.mp4'} and {args.out / 'street.jpg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
