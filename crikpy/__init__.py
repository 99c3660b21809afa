"""crikpy: keep a long-running process alive across the loss of the machine under it."""

__version__ = "0.1.0"
