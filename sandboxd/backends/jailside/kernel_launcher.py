"""The program that starts a Jupyter kernel inside a jail (as `python3 -c`).

The daemon owns the listening side: it bound one unix socket per channel (shell, iopub,
control) in a directory of its own, which the jail sees read-only. This program starts
Debian's ipykernel in its own process with ZeroMQ's `bind` turned, for those channels, into a
`connect` to the daemon's socket: ZeroMQ's socket types do not care which end binds, so the
kernel's ROUTER and PUB sockets reach the daemon's DEALER and SUB sockets with no copy in
between (and no other socket of the kernel connects to them: one peer per channel). The
channels not used (stdin, heartbeat) bind on the jail's own loopback, private to its network
namespace.

The daemon never connects to anything of the jail's: it only accepts on sockets it bound
before the jail existed. Nothing here is trusted (the code the kernel runs can read and
replace all of it); the daemon treats every message as hostile input.
"""

LAUNCHER = r"""
import json, os, sys
sock_dir, key, cwd = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(cwd, exist_ok=True)
os.chdir(cwd)
ports = {"shell": 50001, "iopub": 50002, "stdin": 50003, "control": 50004, "hb": 50005}
conn = {k + "_port": v for k, v in ports.items()}
conn.update(ip="127.0.0.1", transport="tcp", key=key, signature_scheme="hmac-sha256")
path = "/tmp/.sandboxd-kernel.json"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps(conn).encode())
os.close(fd)
import zmq
daemon = {
    f"tcp://127.0.0.1:{ports[name]}": "ipc://" + os.path.join(sock_dir, name)
    for name in ("shell", "iopub", "control")
}
bind, connect, ours = zmq.Socket.bind, zmq.Socket.connect, set()
def bind_or_connect(self, addr):
    if addr in daemon:
        ours.add(id(self))
        return connect(self, daemon[addr])
    return bind(self, addr)
def connect_once(self, addr):
    # ipykernel's debugger socket connects to the shell's endpoint: one peer per channel.
    text = addr.decode(errors="replace") if isinstance(addr, bytes) else addr
    if text in daemon.values() and id(self) not in ours:
        return None
    return connect(self, addr)
zmq.Socket.bind, zmq.Socket.connect = bind_or_connect, connect_once
sys.argv = [sys.argv[0], "-f", path, "--HistoryManager.enabled=False"]
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""

#: Where a jail sees the daemon's socket directory (read-only).
JAIL_SOCKET_DIR = "/run/sandboxd/kernel"
#: The kernel channels the daemon serves (stdin is not: no input; nor the heartbeat: the
#: daemon sees the kernel's death as the jail's end).
CHANNELS = ("shell", "iopub", "control")


def launcher_argv(python: str, key: str, cwd: str) -> list[str]:
    """The jail's program: the kernel, started in `cwd` (made if missing)."""
    return [python, "-c", LAUNCHER, JAIL_SOCKET_DIR, key, cwd]
