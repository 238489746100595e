"""Errors raised when a part is asked for something it cannot do."""


class MixerCapabilityError(ValueError):
    """A mixer (or backbone) was asked for a mode it does not support, e.g. causal pooling in 2-D."""
