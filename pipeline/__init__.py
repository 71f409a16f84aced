"""mpview: multi-perspective lip-reading and face pipeline (prepare, extract, train, evaluate)."""

__version__ = "0.1.0"
