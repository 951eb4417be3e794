"""Maintainers' tools, run from a checkout (`make demo-model`); not part of the installed package."""
