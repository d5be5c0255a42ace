"""The algorithms this distribution ships, by their SageMaker name.

Adding an algorithm is one module in this package (see `__init__.py` for its shape) and one
entry here.
"""

from __future__ import annotations

from types import ModuleType

from . import kmeans, pca
from .errors import UserError

ALGORITHMS: dict[str, ModuleType] = {module.NAME: module for module in (kmeans, pca)}


def get_algorithm(name: str) -> ModuleType:
    """The algorithm module called `name`; UserError listing the known ones otherwise."""
    try:
        return ALGORITHMS[name.strip().lower()]
    except KeyError:
        raise UserError(
            f"Unknown algorithm {name!r}; this smalgo provides: {', '.join(sorted(ALGORITHMS))}."
        ) from None
