"""``python -m benchmarks`` is ``streamseg bench`` (the same flags); it runs the CLI in a child process, so this
folder never imports the command line that imports it."""

import subprocess
import sys

sys.exit(subprocess.call([sys.executable, "-m", "streamseg", "bench", *sys.argv[1:]]))
