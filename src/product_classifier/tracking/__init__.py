"""Tracking at the edges: MLflow runs, their provenance, the registry's promotion; only stages import it."""
