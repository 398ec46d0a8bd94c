"""The first program of a warm *exec* jail: a waiter that becomes the run's program.

A jail costs more to build than most programs take to start (bash, or a python run whose
environment the interpreter reads at start-up). Such runs take a jail built ahead of demand
that runs this waiter, started by the daemon as `python3 -I -S -c <this file's text>`. It
writes `READY` on stdout and blocks on stdin for one handover: two blocks, each a decimal
length line and that many bytes of NUL-terminated entries, the run's environment
(NAME=value) and then its argv. It then `execve`s argv[0] with exactly that argv and
environment, in /workspace, so that the run is what nsjail would have started: the same
process (pid 2 of the jail, the child of its init), the same seccomp filter, no_new_privs,
capabilities, rlimits and cgroup, since all of these survive an exec. What follows the
handover on stdin is the run's own stdin. If stdin closes first, the jail was discarded and
the waiter exits quietly.

One thing of the waiter's would survive the exec: the signals CPython ignores at start-up
(SIGPIPE, SIGXFSZ). They are set back to their default first, as the daemon starts nsjail.

Like `warm_boot`, this file's text is the whole program (the jail has no sandboxd to import),
so the few lines that read the handover stand in both.
"""

READY = b"\x00sandboxd-exec-ready\n"


def pack(entries: list[str]) -> bytes:
    """One handover block: the entries NUL-terminated (so that empty ones survive), after
    their length in bytes. Entries are NUL-free (the request models refuse NUL)."""
    body = b"".join(entry.encode("utf-8", "surrogateescape") + b"\0" for entry in entries)
    return b"%d\n" % len(body) + body


def _boot() -> None:
    import os
    import signal  # its cost is paid before READY, and the exec drops it

    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    os.write(1, READY)

    def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(0, size - len(data))
            if not chunk:
                os._exit(0)
            data += chunk
        return data

    def read_block() -> list[str]:
        line = b""
        while not line.endswith(b"\n") and len(line) < 16:
            line += read_exactly(1)
        body = read_exactly(int(line)).decode("utf-8", "surrogateescape")
        return body.split("\0")[:-1]

    env = dict(entry.partition("=")[::2] for entry in read_block())
    argv = read_block()
    try:
        os.execve(argv[0], argv, env)  # noqa: S606  # execs the run's argv inside its jail: its job
    except OSError as exc:  # argv[0] is an interpreter or /usr/bin/env: should not happen
        os.write(2, f"sandboxd: cannot execute {argv[0]}: {exc.strerror}\n".encode())
        os._exit(126 if isinstance(exc, PermissionError) else 127)


if __name__ == "__main__":
    _boot()
