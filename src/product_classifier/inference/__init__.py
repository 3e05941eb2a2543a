"""What serving and batch scoring run: text, images, labels, the fusion, the ONNX runtime, the predictor.

No Keras, TensorFlow, DVC or MLflow (import-linter contracts in pyproject.toml)."""
