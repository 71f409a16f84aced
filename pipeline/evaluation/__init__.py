"""Evaluation: classification metrics, JSON + Markdown reports, comparison tables and PNG plots."""
