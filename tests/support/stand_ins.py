"""Stand-ins for the fusion graph's tests: projectors with a known linear mixture."""

from __future__ import annotations

import torch


class Linear:
    """A stand-in projector whose mixture is x @ M (the graph only calls ``mixture``)."""

    def __init__(self, matrix):
        self.m = torch.tensor(matrix, dtype=torch.float32)

    def mixture(self, x):
        return x @ self.m
