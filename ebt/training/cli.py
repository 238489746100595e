"""Shared behaviour of the entry points: user errors become one clear line and exit status 2.

In a Hydra multirun (an ablation grid) each job records ``status.json`` in its output folder instead: a failing job
is recorded and the grid goes on, and finished jobs are skipped on a re-run (see :mod:`ebt.training.grid`). The
errors caught (:data:`ebt.errors.USER_ERRORS`) and how one is printed (:func:`ebt.errors.report_user_error`) live
beside the errors, so that the grid's callbacks use them without importing this module.
"""

from collections.abc import Callable
from typing import Any

from ebt.errors import USER_ERRORS, report_user_error
from ebt.training.grid import run_job


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn``; a :class:`~ebt.errors.UserError` prints ``error: <message>`` and exits 2 (HYDRA_FULL_ERROR=1
    re-raises).

    In a Hydra multirun the error is recorded in the job's ``status.json`` instead and the call returns None.
    """
    return run_job(fn, args, USER_ERRORS, report_user_error)
