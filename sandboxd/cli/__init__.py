"""The `sandboxd` command: `serve`, `run`, and the admin commands (tokens, audit, images)."""

from sandboxd.cli.commands import main

__all__ = ["main"]
