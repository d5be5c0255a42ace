"""`python -m smalgo.containers train|serve`: the same as the `smalgo` command."""

import sys

from .cli import main

sys.exit(main())
