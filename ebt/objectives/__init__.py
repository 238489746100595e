"""Objectives: how predictions are made and trained (``model/objective=...``)."""
