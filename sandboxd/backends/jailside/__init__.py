"""Programs whose text runs inside a jail. They import nothing of sandboxd's."""
