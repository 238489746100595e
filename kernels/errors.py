"""The one base class of every error a user can act on, defined in the lowest layer so every package can use it.

``kernels`` is the bottom of the dependency order (kernels <- alt_arch <- ebt <- scripts, tests/test_layering.py), so
the kernel backend's errors, the parts' capability and option errors (:mod:`alt_arch.errors`) and the trainer's
config, data and checkpoint errors (:mod:`ebt.errors`, which re-exports this class) all derive from
:class:`UserError`, and every entry point catches that one class (:mod:`ebt.training.cli`): one ``error:`` line, exit 2.
"""


class UserError(Exception):
    """Bad input or an unusable environment: the message names the problem and the fix (one line)."""
