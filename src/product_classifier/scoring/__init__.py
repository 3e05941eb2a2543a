"""Batch scoring of a products CSV on the inference part: this process (score.py) or Ray Data (ray_data.py)."""
