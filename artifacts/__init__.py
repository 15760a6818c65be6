"""The shipped model: ``digitspot.onnx`` (INT8) and its card ``digitspot.onnx.json``, as package data.

``digitspot.edge.classifier.default_model_path`` finds them here in a wheel or an editable install.
"""
