"""Signed vertices, Avalanche consensus over a DAG, and crash-safe storage."""


class DagError(Exception):
    """Root of the errors that the dag package raises."""
