"""Evaluation: metrics (pure functions on similarity matrices), suites (loaders for the
published datasets' on-disk layouts), the runner that embeds, fuses and scores, and the
factor sweeps behind ``freebind tune``."""
