"""Sharing bundles: push to the Hub with a model card, ONNX export of the fusion graph, and
conversion of the FreeBind authors' released projectors."""
