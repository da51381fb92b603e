"""The errors streamseg raises, each with the exit code the CLI maps it to.

``InputError`` (exit 2) is a problem with what the user gave: a path, a model id,
a camera index, an output location. ``StreamsegError`` (exit 1) is anything that
failed while running. Library code raises these with the underlying exception
chained (``raise ... from exc``); only the CLI turns them into one line on stderr.
"""

from __future__ import annotations


class StreamsegError(Exception):
    """A failure while running (exit code 1)."""

    exit_code = 1


class InputError(StreamsegError, ValueError):
    """Bad input from the user: a missing or unreadable source, model or output (exit code 2)."""

    exit_code = 2


class SourceError(InputError):
    """A source could not be opened or read."""


class ModelLoadError(InputError):
    """A model could not be found or is not a segmentation model."""


class OutputError(InputError):
    """An output could not be created or written."""


class WriteError(StreamsegError):
    """An output that opened fine failed while being written: disk full, file size limit... (exit code 1)."""


class Stopped(Exception):
    """Raised inside a stage when the channel it feeds has no consumer any more."""
