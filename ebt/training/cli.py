"""Shared behaviour of the entry points: user errors become one clear line and exit status 2.

In a Hydra multirun (an ablation grid) each job records ``status.json`` in its output folder instead: a failing job
is recorded and the grid goes on, and finished jobs are skipped on a re-run (see :mod:`ebt.training.grid`).
"""

import os
import sys
from collections.abc import Callable
from typing import Any

from ebt.errors import UserError
from ebt.training.grid import run_job

# every user-facing error derives from the one base class (ebt_kernels.errors.UserError, re-exported by ebt.errors):
# config, data, checkpoint, environment, and the parts' capability/option and the kernel backend's errors
USER_ERRORS = (UserError,)


def report_user_error(error: BaseException) -> None:
    """Print ``error: <message>`` and exit 2; with HYDRA_FULL_ERROR=1 return so the caller re-raises."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn``; a :class:`UserError` prints ``error: <message>`` and exits 2 (HYDRA_FULL_ERROR=1 re-raises).

    In a Hydra multirun the error is recorded in the job's ``status.json`` instead and the call returns None.
    """
    return run_job(fn, args, USER_ERRORS, report_user_error)
