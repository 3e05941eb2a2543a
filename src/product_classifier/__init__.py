"""Rakuten product type classification: shared library for the pipeline and serving."""
