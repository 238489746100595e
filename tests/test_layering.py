"""Dependency direction (README.md, "Design"): kernels <- alt_arch <- ebt <- scripts; alt_arch is plain torch.

(The folder ``kernels/`` is installed as the import package ``ebt_kernels``, so that it never shadows, nor is shadowed
by, Hugging Face's ``kernels`` distribution; see tests/test_packaging.py.)

The rules, each a test below:

* A package imports only packages to its left: ``kernels`` imports torch/triton and nothing of the project,
  ``alt_arch`` may import ``kernels`` (and torch) but never ``ebt``, Lightning or Hydra.
* Inside ``ebt``: ``tasks`` and ``objectives`` are plain torch/numpy (no Lightning, Hydra or OmegaConf, nothing of
  ``training``, ``analysis`` or ``benchmarks``; tasks know no objective); ``training`` imports neither ``analysis``
  nor ``benchmarks`` (they use training, not the other way round); ``analysis`` never imports ``benchmarks`` (the
  benchmarks may use analysis' plotting).
* No import cycles: the modules of ``kernels``, ``alt_arch`` and ``ebt`` form an acyclic graph, imports inside
  functions included (they only hide a cycle) and imports under ``if TYPE_CHECKING:`` left out (never run). Each
  pair of modules that need each other gets one direction (e.g. ``ebt.training.export`` uses ``restore``, which
  reads exports through ``export_format``).
* Scripts are thin entry points: at most :data:`SCRIPT_MAX_LINES` lines (docstring included: the work lives in the
  package, behind ``ebt.commands``), no ``sys.path`` edits (the package is installed) and no private names of the
  package.

The one user-error base class lives at the bottom for that reason: ``ebt_kernels.errors.UserError`` has no imports
at all, ``alt_arch.errors`` (capability and option errors of the parts) imports it, and ``ebt.errors`` re-exports it as
``ebt.errors.UserError``, the base of the config, data, checkpoint and environment errors. So every user-facing error
of every layer is one class, caught in one place (``ebt.errors.USER_ERRORS``, used by ``ebt.training.cli``) by every
entry point.
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
    "ebt/tasks": (*FRAMEWORKS, "ebt.training", "ebt.analysis", "ebt.benchmarks", "ebt.objectives"),
    "ebt/objectives": (*FRAMEWORKS, "ebt.training", "ebt.analysis", "ebt.benchmarks"),
    "ebt/training": ("ebt.analysis", "ebt.benchmarks"),
    "ebt/analysis": ("ebt.benchmarks",),
}
PACKAGES = {"kernels": "ebt_kernels", "alt_arch": "alt_arch", "ebt": "ebt"}  # folder -> import name
SCRIPT_MAX_LINES = 40


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


def test_scripts_are_short():
    long = {p.name: n for p in sorted((ROOT / "scripts").glob("*.py")) if (n := len(p.read_text().splitlines())) >
            SCRIPT_MAX_LINES}
    assert not long, (f"scripts over {SCRIPT_MAX_LINES} lines (lines): {long}; move the work into the package and "
                      "call it through ebt.commands")


def project_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of kernels (as ``ebt_kernels``), alt_arch and ebt."""
    modules = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            modules[".".join((name, *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return modules


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, in functions too, except under ``if TYPE_CHECKING:``."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            found += [n for branch in child.orelse for n in [branch, *_import_nodes(branch)]
                      if isinstance(n, ast.Import | ast.ImportFrom)]
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        found += _import_nodes(child)
    return found


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports: ``from a import b`` names the module ``a.b`` when there is one, else
    ``a`` (its ``__init__``); relative imports are resolved. Parent packages that Python initialises on the way are
    not counted (a package's ``__init__`` importing its own modules is no cycle)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {n for n in names if n in modules and n != module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules that import each other."""
    reach = {m: set() for m in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in reach[start]:
                reach[start].add(module)
                todo += graph[module]
    cycles, seen = [], set()
    for start in sorted(graph):
        group = {m for m in reach[start] if start in reach[m]}
        if start not in group or start in seen:
            continue
        seen |= group
        path, paths = None, {start: [start]}
        todo = [start]
        while path is None:  # breadth first inside the group: a shortest cycle through ``start``
            module = todo.pop(0)
            for nxt in sorted(graph[module] & group):
                if nxt == start:
                    path = [*paths[module], start]
                    break
                if nxt not in paths:
                    paths[nxt] = [*paths[module], nxt]
                    todo.append(nxt)
        cycles.append(path)
    return cycles


def test_no_import_cycles():
    modules = project_modules()
    graph = {m: module_imports(m, path, modules) for m, path in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, ("modules that import each other (imports inside functions count; give each pair one "
                        "direction): " + "; ".join(" -> ".join(c) for c in cycles))


def test_the_cycle_check_sees_imports_inside_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    import y\n")
    assert sorted(a.name for n in _import_nodes(tree) for a in n.names) == ["TYPE_CHECKING", "y"]


def test_user_error_base_imports_nothing():
    """The base class sits below everything: importing it must not pull in any other module of any layer."""
    assert imported_modules(ROOT / "kernels" / "errors.py") == set()


def test_every_user_facing_error_is_one_class_caught_in_one_place():
    from ebt.errors import USER_ERRORS, UserError
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
