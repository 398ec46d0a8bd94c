"""Sandbox backends: one `Backend` interface, one module per isolation technology."""
