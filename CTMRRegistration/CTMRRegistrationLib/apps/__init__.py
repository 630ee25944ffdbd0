"""Entry points: the command lines."""
