"""Runs ``streamseg.cli.commands`` on one case per line of stdin (JSON argv), answering one JSON line per case.

Used by test_fuzz.py: one process imports torch and friends once, so hundreds of cases take
seconds each instead of an interpreter start each; the test kills it when a case hangs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

import streamseg  # noqa: F401  (OpenCV before PyAV)
from streamseg.cli import main


def serve() -> None:
    real_stdout = sys.stdout
    for line in sys.stdin:
        argv = json.loads(line)
        err, out = io.StringIO(), io.StringIO()
        raised = None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except BaseException:  # noqa: BLE001 - the test wants to see any escape
                rc, raised = None, traceback.format_exc()
        real_stdout.write(json.dumps({"rc": rc, "stderr": err.getvalue(), "raised": raised}) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    serve()
