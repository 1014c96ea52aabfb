"""Evaluation: metrics, scoring against exact masks, and the label oracle for the built-in domain."""
