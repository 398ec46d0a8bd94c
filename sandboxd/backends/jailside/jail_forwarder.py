"""The forwarder that runs inside a jail with an egress allowlist (as `python3 -S -c`).

It binds 127.0.0.1:3128 in the jail's loopback-only network, then forks: the child relays
each connection to the proxy's unix socket (bind-mounted into the jail); the parent execs the
run's command, which stays pid 1. Nothing here is trusted: the proxy enforces the policy.
"""

FORWARDER = r"""
import os, socket, sys, threading
sock_path, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen(64)
if os.fork() == 0:
    os.setsid()
    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    def serve(c):
        u = socket.socket(socket.AF_UNIX)
        try:
            u.connect(sock_path)
        except OSError:
            c.close()
            return
        t = threading.Thread(target=pipe, args=(u, c), daemon=True)
        t.start()
        pipe(c, u)
        t.join()
        c.close()
        u.close()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
srv.close()
os.execvp(argv[0], argv)
"""

PROXY_PORT = 3128
JAIL_SOCKET = "/run/sandboxd/egress.sock"


def proxy_env() -> dict[str, str]:
    url = f"http://127.0.0.1:{PROXY_PORT}"
    env = {
        name: url
        for name in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "PIP_PROXY",
            "npm_config_proxy",
            "npm_config_https_proxy",
        )
    }
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


def wrap(python: str, argv: list[str]) -> list[str]:
    return [python, "-S", "-c", FORWARDER, JAIL_SOCKET, str(PROXY_PORT), *argv]
