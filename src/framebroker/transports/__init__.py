"""Thin adapters from wire formats to the core; one module per transport."""
