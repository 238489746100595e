"""What ran, for ``summary.json`` and ``export.json``: the git commit of the code and whether tracked files differed
from it, the main libraries' versions, and the run's seed."""

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("torch", "lightning", "hydra-core", "omegaconf", "triton", "numpy")


def provenance(seed: int) -> dict[str, Any]:
    """``{"seed", "git", "versions"}`` of a run (the keys of ``summary.json``, in its order)."""
    return {"seed": seed, "git": git_state(), "versions": library_versions()}


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the code runs from (dirty: tracked files differ from
    the commit); ``None`` values when the code is not a git checkout (an installed wheel) or git is missing."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            raise ValueError("inside another repository")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    """Python's and the main libraries' versions (``None``: not installed)."""

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: installed(name) for name in VERSIONS}}
