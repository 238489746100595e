"""Dependency direction (DESIGN.md): kernels <- alt_arch <- ebt <- scripts; alt_arch is plain torch."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "alt_arch": {"lightning", "pytorch_lightning", "hydra", "omegaconf", "ebt", "scripts", "wandb"},
    "kernels": {"lightning", "pytorch_lightning", "hydra", "omegaconf", "ebt", "alt_arch", "scripts", "wandb"},
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
