"""Small helpers every stage shares: errors users act on, shared vocabularies, atomic writes,
progress bars, optional-package checks, one-line messages and the version. Nothing here imports
another freebind package."""
