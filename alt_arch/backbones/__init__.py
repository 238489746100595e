"""Backbones: how blocks are arranged. Each maps (B, N, C) -> (B, N, C) and ends with a norm."""
