"""Token mixers: each maps (B, N, C) -> (B, N, C) under the same constructor contract."""
