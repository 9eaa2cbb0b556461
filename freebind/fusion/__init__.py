"""The fused space: the inference graph, projector groups, routers at inference, factors and
presets, bundles on disk, devices, and :class:`~freebind.fusion.fused.FusedSpace`."""
