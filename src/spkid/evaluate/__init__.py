"""Evaluation: full-length inference, metrics, confusion summaries, tier comparison."""
