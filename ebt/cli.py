"""Shared behaviour of the entry points: user errors become one clear line and exit status 2."""

import os
import sys
from collections.abc import Callable
from typing import Any

from alt_arch.errors import MixerCapabilityError
from ebt.errors import UserError


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn``; a :class:`UserError` prints ``error: <message>`` and exits 2 (HYDRA_FULL_ERROR=1 re-raises)."""
    try:
        return fn(*args)
    except (UserError, MixerCapabilityError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
