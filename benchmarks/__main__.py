import sys

from streamseg.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
