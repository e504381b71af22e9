"""FANN-compatible neural networks in numpy."""


class NeuralError(Exception):
    """Root of the errors that the neural package raises."""
