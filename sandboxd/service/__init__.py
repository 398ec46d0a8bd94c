"""The daemon's domain, without HTTP: runs, sandboxes, policy, tokens, audit, the store."""
