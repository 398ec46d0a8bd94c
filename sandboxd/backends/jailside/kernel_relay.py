"""The relay that runs inside a jail holding an interpreter context (as `python3 -S -c`).

It starts a Jupyter kernel (Debian's ipykernel) bound to the jail's own loopback, which is
private to the jail's network namespace, then joins each kernel channel to the unix socket the
daemon listens on for it (a directory the daemon made and bind-mounted read-only): two
outgoing connections per channel, and bytes copied both ways. ZMTP is a byte stream, so the
daemon's ZeroMQ socket and the kernel's each see the other as their peer.

The daemon never connects to anything of the jail's: it only accepts on sockets it bound
before the jail existed. Nothing here is trusted (the code the kernel runs can read and
replace all of it); the daemon treats every message as hostile input. The relay exits with
the kernel's status, so the jail ends when the kernel dies (e.g. killed by the memory limit).
"""

RELAY = r"""
import json, os, socket, sys, threading, time
sock_dir, key, python, cwd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(cwd, exist_ok=True)
os.chdir(cwd)
ports = {"shell": 50001, "iopub": 50002, "stdin": 50003, "control": 50004, "hb": 50005}
conn = {k + "_port": v for k, v in ports.items()}
conn.update(ip="127.0.0.1", transport="tcp", key=key, signature_scheme="hmac-sha256")
path = "/tmp/.sandboxd-kernel.json"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, json.dumps(conn).encode())
os.close(fd)
kernel = os.fork()
if kernel == 0:
    os.setsid()
    argv = [python, "-m", "ipykernel_launcher", "-f", path, "--IPKernelApp.parent_handle=0"]
    os.execv(python, argv)
def pipe(a, b):
    try:
        while True:
            data = a.recv(262144)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def join(name):
    deadline = time.monotonic() + 60
    while True:
        t = socket.socket()
        try:
            t.connect(("127.0.0.1", ports[name]))
            break
        except OSError:
            t.close()
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
    t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    u = socket.socket(socket.AF_UNIX)
    u.connect(os.path.join(sock_dir, name))
    threading.Thread(target=pipe, args=(t, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, t), daemon=True).start()
for name in ("shell", "iopub", "control"):
    threading.Thread(target=join, args=(name,), daemon=True).start()
_, status = os.waitpid(kernel, 0)
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""

#: Where a jail sees the daemon's socket directory (read-only).
JAIL_SOCKET_DIR = "/run/sandboxd/kernel"
#: The kernel channels relayed (stdin and heartbeat are not: no input, and the daemon sees
#: the kernel's death as the jail's end).
CHANNELS = ("shell", "iopub", "control")


def relay_argv(python: str, key: str, cwd: str) -> list[str]:
    """The jail's program: the relay, which starts the kernel in `cwd` (made if missing)."""
    return [python, "-S", "-c", RELAY, JAIL_SOCKET_DIR, key, python, cwd]
