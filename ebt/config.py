"""OmegaConf resolvers used by the configs (registered on import)."""

import os
import secrets

from omegaconf import OmegaConf


def _run_uid() -> str:
    """Short random id that makes run folders collision-free even when started in the same second."""
    return f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", _run_uid, use_cache=True)


register_resolvers()
