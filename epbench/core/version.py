"""The suite's version (records carry it)."""

__version__ = "0.1.0"
