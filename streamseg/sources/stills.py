"""Still images as a source: one image, every image in a folder (sorted by name), or an image URL.

Opened in the caller's thread (an unreadable or missing image fails before any worker starts);
iterated by the pipeline's capture thread. EXIF orientation is applied; an image too large to
decode safely (a decompression bomb) is refused.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from streamseg.errors import SourceError, redact, short_message
from streamseg.frames import Frame
from streamseg.roles import SourceBase

from .names import IMAGE_EXTENSIONS, is_url

STILL_FPS = 25  # the rate a folder of stills gets when written as a video


def _read_image(path: Path | str, data: bytes | None = None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).copy()
    except Image.DecompressionBombError as exc:
        raise SourceError(f"image too large to read safely: {redact(str(path))} ({short_message(exc)})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SourceError(f"not a readable image: {redact(str(path))} ({short_message(exc)})") from exc


def _download(url: str, timeout: float) -> bytes:
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    try:
        with urlopen(Request(url, headers={"User-Agent": "streamseg"}), timeout=timeout) as response:
            return response.read()
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        text = short_message(reason) if isinstance(reason, BaseException) else str(reason)
        raise SourceError(f"cannot download image {redact(url)} ({redact(text)})") from exc


class ImageSource(SourceBase):
    """One still image, or every image in a folder (sorted by name)."""

    live = False

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        spec = str(path)
        self.is_folder = False
        if is_url(spec):  # an http(s) image: fetched now, so that an offline machine fails in the caller
            data = _download(spec, timeout)
            _read_image(spec, data)
            name = Path(urlparse(spec).path).name or "image.png"
            self._items: list[tuple[str, Path | str, bytes | None]] = [(name, spec, data)]
        else:
            p = Path(path)
            if p.is_dir():
                paths = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
                if not paths:
                    raise SourceError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {p}")
                self.is_folder = True
            elif p.is_file():
                paths = [p]
                _read_image(p)  # fail now, in the caller, if it cannot be read
            else:
                raise SourceError(f"no such file: {p}")
            self._items = [(q.name, q, None) for q in paths]
        self.fps = float(STILL_FPS)
        self.expected_frames = len(self._items)
        self.description = redact(spec)

    def __iter__(self) -> Iterator[Frame]:
        tb = Fraction(1, STILL_FPS)
        for i, (name, where, data) in enumerate(self._items):
            yield Frame(index=i, image=_read_image(where, data), pts=i, time_base=tb, name=name)

    def close(self) -> None:
        pass
