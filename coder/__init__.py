"""coder: a writer/reviewer agent pair that fixes failing tests through sandboxd (in progress)."""
