import sys

from streamseg.bench import main

sys.exit(main())
