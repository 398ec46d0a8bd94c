"""sandboxd: run untrusted code in resource-limited, isolated sandboxes over HTTP."""

__version__ = "0.1.0"
