"""Linear parts (``model/linear=...``): what a "linear projection" is everywhere in a block.

``dense`` (``nn.Linear``), ``pattention`` (TokenFormer token-parameter attention, growable) and ``memory``
(MemoryFormer hashed lookup tables); each module also defines the matching ``model/mlp`` option.
"""
