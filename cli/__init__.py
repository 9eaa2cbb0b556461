"""freebind's command-line interface (installed as the package ``freebind_cli``)."""
