"""Frames as image files: one still, or one file per frame in a folder, each written whole."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from streamseg.closing import Closing
from streamseg.errors import OutputError, short_message
from streamseg.frames import Frame
from streamseg.roles import SinkBase
from streamseg.sources.names import IMAGE_EXTENSIONS

from .files import check_parent_folder, make_output_folder


class ImageFiles(Closing):
    """An output that saves one image file per frame: counts them, lists them in ``written``; nothing to close."""

    def __init__(self) -> None:
        self.frames_written = 0
        self._written: list[Path] = []

    def _save(self, image, target: Path) -> None:
        """Save a PIL image under a temporary name, then rename it over ``target``: a file is there whole or
        not at all. A failure is a :class:`~streamseg.errors.WriteError` naming the file."""
        from streamseg.errors import WriteError

        from .files import commit, partial_path

        partial = partial_path(target)
        try:
            image.save(partial)
            commit(partial, target)
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise WriteError(f"cannot write {target}: {short_message(exc)}") from exc
        self.frames_written += 1
        self._written.append(target)

    @property
    def written(self) -> list[Path]:
        return list(self._written)

    def close(self) -> None:
        pass


class ImageSink(ImageFiles, SinkBase):
    """Writes frames as images: into one file (a single still), or into a folder.

    In a folder each frame is named after its source file when it has one, else
    ``{index:06d}.png``.
    """

    def __init__(self, path: str | Path, *, folder: bool) -> None:
        self.path = Path(path)
        self.folder = folder
        if folder:
            make_output_folder(self.path)
        else:
            if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise OutputError(f"unsupported image output {self.path}: use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
            check_parent_folder(self.path)
        super().__init__()

    def write(self, frame: Frame) -> None:
        if self.folder:
            target = self.path / (Path(frame.name).with_suffix(".png").name if frame.name else f"{frame.index:06d}.png")
        else:
            if self.frames_written:
                raise OutputError(f"{self.path} holds one image, but the input has more; write to a folder or a video")
            target = self.path
        self._save(Image.fromarray(frame.image), target)
