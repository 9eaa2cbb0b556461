"""The public import path of the ONNX export of a bundle's fusion graph, ``freebind.export``::

    from freebind.export import default_feeds, export
    export("fused.safetensors", "fused.onnx")       # freebind export BUNDLE --format onnx

The implementation lives in :mod:`freebind.share.onnx`."""

from freebind.share.onnx import (FORMATS, ExportReport, default_feeds, export, factor_defaults,
                                 random_inputs, save, to_onnx, verify_onnx)

__all__ = ["FORMATS", "ExportReport", "default_feeds", "export", "factor_defaults",
           "random_inputs", "save", "to_onnx", "verify_onnx"]
