"""The ``linear`` part: what a "linear projection" is everywhere in a block.

Every projection in a mixer or MLP is built as ``linear(d_in, d_out)``, so swapping this factory
(``model/linear=...``) changes all of them at once.
"""

from torch import nn


def dense(d_in: int, d_out: int, *, bias: bool = False) -> nn.Linear:
    """A plain ``nn.Linear`` (no bias by default, as in Transformer++)."""
    return nn.Linear(d_in, d_out, bias=bias)
