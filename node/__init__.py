"""Node daemon, command-line interface, configuration and control API."""

__version__ = "0.1.0"


class NodeError(Exception):
    """Root of the errors that the node package raises."""
