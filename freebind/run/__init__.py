"""Running encoders over user files: targets (``freebind.open``), Hub references, pre-flight
checks, what verbs use when not told, imports of precomputed rows, embed partitions (written,
and read back from an output folder) and the engines that run chunks."""
