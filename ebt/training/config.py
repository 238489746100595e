"""OmegaConf resolvers used by the configs (registered on import)."""

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """The config tree: ``ebt/configs`` inside an installed wheel, else the checkout's top-level ``configs/``."""
    installed = Path(__file__).resolve().parents[1] / "configs"
    return installed if (installed / "train.yaml").is_file() else Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = config_dir()


def _run_uid() -> str:
    """Short random id that makes run folders collision-free even when started in the same second."""
    return f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", _run_uid, use_cache=True)


register_resolvers()


def compose_train(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config ``scripts/train.py`` would see with these overrides (for scripts, notebooks and tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name, overrides=overrides)
