"""The package installs anywhere: the wheel carries every module and config, and its console commands train from
any folder; our ``kernels/`` folder (import name ``ebt_kernels``) and a distribution named ``kernels`` (Hugging
Face's, which ``transformers`` pulls in) live side by side without shadowing each other."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.utils import ROOT

PACKAGES = ("alt_arch", "ebt", "kernels")
STANDIN_KERNELS = '''[project]
name = "kernels"
version = "0.0.1"
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
'''


def build_wheel(out: Path, source: Path = ROOT) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(out)], check=True, capture_output=True, text=True)
    return next(out.glob("*.whl"))


def expected_files() -> set[str]:
    """Wheel paths of the tracked modules and configs: kernels/ installs as ebt_kernels/, configs/ as ebt/configs/."""
    tracked = subprocess.run(["git", "ls-files", *PACKAGES, "configs"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.split()
    renames = {"kernels": "ebt_kernels", "configs": "ebt/configs"}
    return {renames.get(p.split("/")[0], p.split("/")[0]) + p[p.index("/"):] for p in tracked
            if p.endswith((".py", ".yaml"))}


def test_wheel_carries_every_module_and_config_and_no_bare_kernels(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    assert expected_files() - names == set(), "the wheel misses tracked files"
    assert not [n for n in names if n.startswith("kernels/")], "the wheel must not install a top-level `kernels`"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()
    commands = {line.split(" = ")[0] for line in text.splitlines()}
    assert {"ebt-train", "ebt-think", "ebt-eval", "ebt-collect", "ebt-generate", "ebt-export"} <= commands


@pytest.mark.slow  # subprocesses end to end (~20 s); .ci/run runs the slow tests too
def test_installed_wheel_trains_from_any_folder_beside_a_kernels_distribution(tmp_path):
    """Fresh venv (system packages visible for torch & co.), our wheel and a stand-in ``kernels`` installed into it;
    ``ebt-train debug=fdr`` runs from a folder outside the repository, and both ``kernels`` names resolve to their
    own distribution."""
    standin = tmp_path / "standin"
    (standin / "kernels").mkdir(parents=True)
    (standin / "pyproject.toml").write_text(STANDIN_KERNELS)
    (standin / "kernels" / "__init__.py").write_text("STANDIN = True\n")
    wheels = [build_wheel(tmp_path / "wheels"), build_wheel(tmp_path / "wheels_standin", standin)]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    *map(str, wheels)], check=True, capture_output=True, text=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "HYDRA_FULL_ERROR"}}
    env.update(WANDB_MODE="offline", MPLBACKEND="Agg", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")

    where = subprocess.run([str(python), "-c", "import ebt, ebt_kernels, kernels; assert kernels.STANDIN; "
                            "print(ebt.__file__); print(ebt_kernels.__file__)"],
                           cwd=outside, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(str(env_dir) in line for line in where.stdout.split()), where.stdout  # the wheel, not the checkout

    run = subprocess.run([str(bin_dir / "ebt-train"), "debug=fdr", "kernels=torch", f"hydra.run.dir={outside}/run"],
                         cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (outside / "run" / "summary.json").is_file()
    assert (outside / "run" / "checkpoints" / "last.ckpt").is_file()
