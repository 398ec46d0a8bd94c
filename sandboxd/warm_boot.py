"""The first program of a warm jail: an interpreter, started ahead of demand, that waits for
the one run it will serve.

The daemon starts it inside a fresh jail as `python3 -u -c <this file's text>`. It writes
`READY` on stdout, then blocks on stdin for one handover: a decimal length line and that many
bytes of the run's environment (NUL-separated NAME=value). It then becomes the run, as
`python3 -u main.py` in /workspace would be: environment, argv, `sys.path[0]`, a fresh
`__main__`, uncaught exceptions printed by `sys.excepthook` without this file's frame, exit
status 1. What follows the handover on stdin
is the run's own stdin. The daemon sets the run's limits from outside before it hands over.
If stdin closes first, the jail was discarded and exits quietly.
"""

READY = b"\x00sandboxd-warm-ready\n"


def _boot() -> None:
    # Only modules every interpreter has loaded at start-up: an import here would be one
    # more module for the run to see and to tear down at exit.
    import builtins
    import os
    import sys

    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader
    # The first compile() in a process sets up the compiler (~2 ms here): not on a run's time.
    compile("def f(a, *b, c=1, **d):\n    return [x for x in b if x]\nclass C: pass\n", "", "exec")
    os.write(1, READY)

    def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(0, size - len(data))
            if not chunk:
                os._exit(0)
            data += chunk
        return data

    line = b""
    while not line.endswith(b"\n") and len(line) < 16:
        line += read_exactly(1)
    entries = read_exactly(int(line)).decode("utf-8", "surrogateescape").split("\0")
    os.environ.clear()
    for entry in filter(None, entries):
        name, _, value = entry.partition("=")
        os.environ[name] = value
    path = "/workspace/main.py"
    sys.argv[:] = ["main.py"]
    sys.orig_argv[:] = [sys.executable, "-u", "main.py"]
    sys.path[0] = "/workspace"
    main = sys.modules["__main__"]
    namespace = main.__dict__
    namespace.clear()
    namespace.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __spec__=None,
        __file__=path,
        __cached__=None,
        __builtins__=builtins,
        __loader__=loader("__main__", path),
    )
    del builtins, loader, line, entries, main
    try:
        with open(path, "rb") as fh:
            code = compile(fh.read(), path, "exec")
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        exc.__traceback__ = tb.tb_next if tb is not None else None  # hide this file's frame
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.stderr.flush()
        raise SystemExit(1) from None


if __name__ == "__main__":
    _boot()
