"""Only what pyproject.toml cannot say: the wheel carries the top-level data/ folder as workbench/data."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["workbench*"]), "workbench.data"], package_dir={"workbench.data": "data"})
