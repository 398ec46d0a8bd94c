"""The Docker backend: one container per run, limits set by the engine and the daemon."""
