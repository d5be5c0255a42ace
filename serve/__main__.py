"""`python -m smalgo.serve [MODEL_DIR]`: the inference server (what `smalgo serve` runs)."""

import sys

from .server import main

sys.exit(main())
