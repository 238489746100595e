"""Energy-based transformers: objectives, tasks, the Lightning module and the training entry point."""
