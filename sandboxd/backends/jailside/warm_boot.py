"""The first program of a warm jail: an interpreter, started ahead of demand, that waits for
the one run it will serve.

The daemon starts it inside a fresh jail as `python3 -u -c <this file's text>`. It writes
`READY` on stdout, then blocks on stdin for one handover: a decimal length line and that many
bytes of the run's environment (NUL-separated NAME=value). It then becomes the run, as
`python3 -u main.py` in /workspace would be: environment, argv, `sys.path[0]`, a fresh
`__main__` module, uncaught exceptions printed by `sys.excepthook` without this file's frame,
exit status 1. What follows the handover on stdin is the run's own stdin. The daemon sets the
run's limits from outside before it hands over. If stdin closes first, the jail was discarded
and exits quietly.

Exit: what a program can observe of the interpreter's finalization is done as CPython does
it, in its order: non-daemon threads joined, atexit handlers run, the program's modules
dropped from `sys.modules` and collected (so `__del__` methods run with their globals intact
and unclosed files are flushed), standard streams flushed (a failing stdout makes the status
120), the same exit status for `SystemExit`. Then the process ends with `_exit`, skipping the
teardown of the interpreter itself (~3 ms of freeing memory nobody sees). A run that loaded
native code from outside the standard library (ctypes, cffi, third-party extension modules)
may hold C stdio buffers that only the C library's exit flushes: it gets the full exit.
"""

READY = b"\x00sandboxd-warm-ready\n"
#: Standard-library native modules that run arbitrary C code (and so may buffer C stdio).
FOREIGN_CODE = ("_ctypes", "_cffi_backend")


def _boot() -> None:
    # Only modules every interpreter has loaded at start-up: an import here would be one
    # more module for the run to see.
    import os
    import sys

    _warm_up()
    boot_modules = set(sys.modules) - {"__main__"}
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
    del line, read_exactly
    _become_run(entries, boot_modules)


def _warm_up() -> None:
    """Pay what the first run would: the compiler's set-up, start-up's objects frozen."""
    # The first compile() in a process sets up the compiler (~2 ms here): not on a run's time.
    compile("def f(a, *b, c=1, **d):\n    return [x for x in b if x]\nclass C: pass\n", "", "exec")
    _freeze_boot_objects()


def _become_run(entries: list[str], boot_modules: set[str]) -> None:
    """Become `python3 -u main.py` in /workspace with the environment `entries` (NAME=value;
    empty ones ignored); never returns (a full exit raises SystemExit)."""
    import builtins
    import os
    import sys

    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader
    os.environ.clear()
    for entry in filter(None, entries):
        name, _, value = entry.partition("=")
        os.environ[name] = value
    path = "/workspace/main.py"
    sys.argv[:] = ["main.py"]
    sys.orig_argv[:] = [sys.executable, "-u", "main.py"]
    sys.path[0] = "/workspace"
    main = type(sys)("__main__")
    main.__dict__.update(
        __annotations__={},
        __builtins__=builtins,
        __cached__=None,
        __file__=path,
        __loader__=loader("__main__", path),
    )
    sys.modules["__main__"] = main
    namespace = main.__dict__
    del builtins, loader, entries, main
    status = 0
    try:
        with open(path, "rb") as fh:
            code = compile(fh.read(), path, "exec")
        exec(code, namespace)  # noqa: S102  # runs the untrusted program inside its jail: its job
    except SystemExit as exc:
        if _loaded_foreign_code(boot_modules):
            raise
        status = _system_exit_status(exc)
    except BaseException as exc:
        tb = exc.__traceback__
        exc.__traceback__ = tb.tb_next if tb is not None else None  # hide this file's frame
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.stderr.flush()
        del exc, tb
        status = 1
    del namespace
    if _loaded_foreign_code(boot_modules):
        raise SystemExit(status)
    os._exit(_finalize(status, boot_modules))


def _freeze_boot_objects() -> None:
    """Move start-up's objects out of the collector's sight, so that the collection at exit
    walks only what the run made. (`gc` leaves sys.modules again if start-up had not
    loaded it.)"""
    import sys

    was_loaded = "gc" in sys.modules
    import gc

    gc.collect()
    gc.freeze()
    if not was_loaded:
        del sys.modules["gc"]


def _loaded_foreign_code(boot_modules: set[str]) -> bool:
    import os
    import sys

    stdlib_native = os.path.join(
        sys.base_prefix, "lib", "python{}.{}".format(*sys.version_info[:2]), "lib-dynload", ""
    )
    for name, module in list(sys.modules.items()):
        if name in boot_modules:
            continue
        if name in FOREIGN_CODE:
            return True
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or file.endswith((".py", ".pyc")):
            continue
        if not file.startswith(stdlib_native):
            return True
    return False


def _system_exit_status(exc: SystemExit) -> int:
    """The status CPython exits with for an uncaught SystemExit (a non-integer code is
    printed on stderr, status 1)."""
    import sys

    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
    except Exception:
        return 1  # as CPython: a failing stderr changes nothing
    return 1


def _finalize(status: int, boot_modules: set[str]) -> int:
    """What a program can observe of CPython's exit, in CPython's order; the exit status."""
    import sys

    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except Exception as exc:  # as CPython: reported, the exit goes on
            _report_unraisable(exc, "threading._shutdown")
    import atexit
    import gc

    atexit._run_exitfuncs()
    # As CPython: the modules the run added (and its __main__) leave sys.modules, and a
    # collection reclaims them; finalizers run while their globals are still intact.
    for name in reversed(list(sys.modules)):
        if name not in boot_modules:
            sys.modules[name] = None  # type: ignore[assignment]
    del threading
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception as exc:
            if stream is sys.stdout and status == 0:
                status = 120
            _report_unraisable(exc, "sys.stdout" if stream is sys.stdout else "sys.stderr")
    return status


def _report_unraisable(exc: BaseException, where: str) -> None:
    import sys

    class Unraisable:
        exc_type, exc_value, exc_traceback = type(exc), exc, exc.__traceback__
        err_msg, object = f"Exception ignored in: {where}", None

    try:
        sys.unraisablehook(Unraisable)  # type: ignore[arg-type]
    except Exception:
        return


if __name__ == "__main__":
    _boot()
