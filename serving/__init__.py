"""FastAPI serving of the fused product classifier (`serving.app:app`): a thin HTTP face over `product_classifier`."""
