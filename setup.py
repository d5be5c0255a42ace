"""Lists smalgo's packages for setuptools (the metadata is in pyproject.toml).

Each top-level folder is one package of the `smalgo` namespace (recordio/ is smalgo.recordio, and
so on: see docs/architecture.md); every folder below them with an __init__.py is a subpackage,
found here so that a new algorithm's subpackage needs no line in pyproject.toml."""

from pathlib import Path

from setuptools import setup

# sagemaker/ is smalgo.sagemaker, the SageMaker SDK v2 estimators (the `sagemaker` extra).
ROOTS = ("recordio", "algorithms", "serve", "containers", "sagemaker")

packages, package_dir = [], {}
for root in ROOTS:
    for init in sorted(Path(root).rglob("__init__.py")):
        folder = init.parent
        name = "smalgo." + ".".join(folder.parts)
        packages.append(name)
        package_dir[name] = folder.as_posix()

setup(packages=packages, package_dir=package_dir)
