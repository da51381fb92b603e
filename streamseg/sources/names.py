"""What an input is, by its name: a network stream, a video file, an image; and names safe for files."""

from __future__ import annotations

import re

VIDEO_FILE_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".flv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # read and written alike

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt", "rtp"})


def is_url(spec: str) -> bool:
    """Whether an input names a network stream or file (``rtsp://``, ``http(s)://``, ``tcp://``...)."""
    from urllib.parse import urlparse

    return urlparse(spec).scheme.lower() in STREAM_SCHEMES


def safe_name(text: str, default: str) -> str:
    """``text`` as a file-name-safe word: runs of other characters become ``-``; ``default`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or default
