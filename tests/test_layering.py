"""Dependency direction (README.md, "Design"): kernels <- alt_arch <- ebt <- scripts; alt_arch is plain torch.

(The folder ``kernels/`` is installed as the import package ``ebt_kernels``, so that it never shadows, nor is shadowed
by, Hugging Face's ``kernels`` distribution; see tests/test_packaging.py.)

A package may import only packages to its left: ``kernels`` imports torch/triton and nothing of the project,
``alt_arch`` may import ``kernels`` (and torch) but never ``ebt``, Lightning or Hydra. Inside ``ebt``:
``tasks`` and ``objectives`` are plain torch/numpy (no Lightning, Hydra or OmegaConf, nothing of ``training`` or
``analysis``); ``training`` never imports ``analysis`` (analysis uses training, not the other way round). Scripts are
thin entry points: no ``sys.path`` edits (the package is installed) and no private names of the package.

The one user-error base class lives at the bottom for that reason: ``ebt_kernels.errors.UserError`` has no imports
at all,
``alt_arch.errors`` (capability and option errors of the parts) imports it, and ``ebt.errors`` re-exports it as
``ebt.errors.UserError``, the base of the config, data, checkpoint and environment errors. So every user-facing error
of every layer is one class, caught in one place (``ebt.training.cli.USER_ERRORS``) by every entry point.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "alt_arch": {"lightning", "pytorch_lightning", "hydra", "omegaconf", "ebt", "scripts", "wandb"},
    "kernels": {"lightning", "pytorch_lightning", "hydra", "omegaconf", "ebt", "alt_arch", "scripts", "wandb",
                "kernels"},
}
ERROR_MODULES = ["ebt_kernels.errors", "ebt_kernels.dispatch", "alt_arch.errors", "ebt.errors"]
FRAMEWORKS = {"lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb"}
SUBPACKAGE_RULES = {  # folder -> module prefixes it must not import
    "ebt/tasks": (*FRAMEWORKS, "ebt.training", "ebt.analysis", "ebt.objectives"),
    "ebt/objectives": (*FRAMEWORKS, "ebt.training", "ebt.analysis"),
    "ebt/training": ("ebt.analysis",),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package):
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_modules(p) & FORBIDDEN[package])
        for p in (ROOT / package).rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package} must stay free of these imports: {offenders}"


def full_imports(path: Path) -> set[str]:
    """Every module imported by ``path``, dotted in full (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("folder", sorted(SUBPACKAGE_RULES))
def test_ebt_subpackages_keep_their_direction(folder):
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in full_imports(p) if _matches(m, SUBPACKAGE_RULES[folder]))
                 for p in (ROOT / folder).rglob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{folder} must not import these: {offenders}"


def test_scripts_are_thin_entry_points():
    for path in (ROOT / "scripts").glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text, f"{path.name} edits sys.path; the package is installed (pip install -e .)"
        private = [m for m in full_imports(path) if m.rsplit(".", 1)[-1].startswith("_") and m.startswith(
            ("ebt", "alt_arch", "kernels"))]
        assert not private, f"{path.name} imports private names {private}"


def test_user_error_base_imports_nothing():
    """The base class sits below everything: importing it must not pull in any other module of any layer."""
    assert imported_modules(ROOT / "kernels" / "errors.py") == set()


def test_every_user_facing_error_is_one_class_caught_in_one_place():
    from ebt.errors import UserError
    from ebt.training.cli import USER_ERRORS
    from ebt_kernels.errors import UserError as Base

    assert UserError is Base
    assert tuple(USER_ERRORS) == (Base,)
    errors = {f"{m}.{name}": cls for m in ERROR_MODULES
              for name, cls in inspect.getmembers(importlib.import_module(m), inspect.isclass)
              if issubclass(cls, Exception) and cls.__module__ == m}
    assert {"ebt_kernels.dispatch.KernelBackendError", "alt_arch.errors.MixerCapabilityError",
            "alt_arch.errors.PartOptionError", "ebt.errors.ConfigError", "ebt.errors.CheckpointError",
            "ebt.errors.DataError", "ebt.errors.EnvironmentSetupError"} <= set(errors)
    assert not [name for name, cls in errors.items() if not issubclass(cls, Base)]
