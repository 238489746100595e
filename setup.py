"""Package layout; everything else is in pyproject.toml.

Two folders install under other names. ``kernels/`` is the import package ``ebt_kernels``: the import name
``kernels`` belongs to Hugging Face's distribution, and the two must not shadow each other. ``configs/`` ships in
the wheel as ``ebt/configs`` (data only): the console entry points compose from it, a checkout composes from
``configs/`` itself (:func:`ebt.training.config.config_dir`). Config folders are listed here from the tree, so a new
config group ships without an edit. tests/test_packaging.py builds the wheel and checks it.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CONFIG_PACKAGES = ["ebt.configs"] + [
    "ebt.configs." + ".".join(folder.relative_to(ROOT / "configs").parts)
    for folder in sorted((ROOT / "configs").rglob("*")) if folder.is_dir() and not folder.name.startswith((".", "_"))
]

setup(
    packages=[*find_packages(include=["alt_arch", "alt_arch.*", "ebt", "ebt.*"]), "ebt_kernels", *CONFIG_PACKAGES],
    package_dir={"ebt_kernels": "kernels", "ebt.configs": "configs"},
    package_data={name: ["*.yaml"] for name in CONFIG_PACKAGES},
)
