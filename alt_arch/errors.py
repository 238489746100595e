"""Errors raised when a part is asked for something it cannot do, or built with an option value it cannot take.

Both are :class:`ebt_kernels.errors.UserError` (the one user-error base class, defined in the lowest layer): every entry
point prints them as one ``error:`` line. They are also ``ValueError``, as before.
"""

from ebt_kernels.errors import UserError


class MixerCapabilityError(UserError, ValueError):
    """A mixer (or backbone) was asked for a mode it does not support, e.g. causal pooling in 2-D."""


class PartOptionError(UserError, ValueError):
    """A part's option has a value the part cannot take (a size below 1, an unknown variant, a width that does
    not split into the heads): raised when the part is built, the message naming the option and the fix."""
