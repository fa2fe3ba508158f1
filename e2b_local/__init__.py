"""e2b-local: a sandbox server for one Linux machine that speaks E2B's wire protocol."""

__version__ = "0.1.0"
