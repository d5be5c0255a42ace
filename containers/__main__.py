"""`python -m smalgo.containers train|serve`: the same as the `smalgo` command."""

import sys

from .entrypoint import main

sys.exit(main())
