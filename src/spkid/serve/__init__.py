"""Using a trained tier: the identifier behind the MLflow model, the `identify` command and
the ONNX export."""
