"""The pipeline part: the stages' library (data, training, export, quantize, fusion fitting, evaluation)."""
