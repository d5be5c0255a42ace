"""The algorithms this distribution ships, by their SageMaker name.

Adding an algorithm is one subpackage of `smalgo.algorithms` that makes an `Algorithm` object
(contract.py) and one line here. `python -m smalgo.algorithms.registry` prints the names, one a
line (the Makefile builds one image per name).
"""

from __future__ import annotations

import sys

from . import factorization_machines, kmeans, linear_learner, pca, xgboost
from .contract import Algorithm
from .errors import UserError

ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        linear_learner.ALGORITHM,
        kmeans.ALGORITHM,
        pca.ALGORITHM,
        factorization_machines.ALGORITHM,
        xgboost.ALGORITHM,
    )
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called `name` (case and surrounding blanks ignored); UserError listing the
    known ones otherwise."""
    try:
        return ALGORITHMS[name.strip().lower()]
    except KeyError:
        raise UserError(f"Unknown algorithm {name!r}; this smalgo provides: {', '.join(sorted(ALGORITHMS))}.") from None


if __name__ == "__main__":
    sys.stdout.write("".join(f"{name}\n" for name in ALGORITHMS))
