"""``python -m streamseg.testing models DIR``: save every tiny test model into ``DIR/NAME`` and say how to use it.

``python -m streamseg.testing streams N``: serve N live synthetic cameras (MPEG-TS over TCP) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamseg.testing", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    models = sub.add_parser("models", help="save tiny random-weight models (every family streamseg runs)")
    models.add_argument("folder", type=Path, metavar="DIR")
    streams = sub.add_parser("streams", help="serve live synthetic cameras until Ctrl-C")
    streams.add_argument("count", type=int, nargs="?", default=1, metavar="N")
    args = p.parse_args(argv)
    if args.what == "streams":
        from .streams import main as serve_streams

        return serve_streams([str(args.count)])
    from .models import save_all

    saved = save_all(args.folder)
    for name, folder in saved.items():
        print(f"{name}: {folder}")
    print(f"try: streamseg sample_media/street.mp4 -o out.mp4 --model {saved['clipseg']} --prompt \"person, car\"\n"
          f"     streamseg sample_media/street.mp4 -o out.mp4 --model {saved['sam2']} --point 320,200\n"
          "(random weights: the masks are arbitrary; the same commands with a Hub id give real ones)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
