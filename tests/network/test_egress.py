"""Egress allowlists through the daemon's proxy, against a test host in a network namespace
(10.213.x.2) that these tests create. No other address is ever targeted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import InvalidRequest, LimitTooHigh
from sandboxd.models import RunResult
from tests.daemon import Daemon
from tests.netns import NetHost

FETCH = r"""
import sys, urllib.request, urllib.error
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            print("OK", url, r.read().decode())
    except urllib.error.HTTPError as e:
        print("HTTP", e.code, url, e.read().decode().strip())
    except OSError as e:
        print("ERR", url, e)
"""

CONNECT = r"""
import socket, sys
target = sys.argv[1]
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = s.recv(4096).decode()
print(head.splitlines()[0])
if " 200 " in head:
    s.sendall(b"ping through the tunnel")
    print("ECHO", s.recv(4096).decode())
else:
    print("BODY", head.split("\r\n\r\n", 1)[1].strip())
"""


@pytest.fixture(scope="module")
def client(egress_daemon: Daemon) -> Iterator[SyncClient]:
    with egress_daemon.client() as c:
        yield c


def run(client: SyncClient, code: str, allow: list[str], *args: str) -> RunResult:
    return client.run(
        code="",
        files=[{"path": "probe.py", "content": code}],
        command=["python3", "probe.py", *args],
        network={"mode": "allowlist", "allow": allow},
    )


def lines(result: RunResult) -> list[str]:
    assert result.status == "ok", result
    return result.stdout.splitlines()


def test_allowed_host_over_http(client: SyncClient, testhost: NetHost) -> None:
    result = run(
        client, FETCH, ["index.test:8080", f"{testhost.net}:8080"], "http://index.test:8080/hello"
    )
    assert lines(result) == [
        "OK http://index.test:8080/hello hello from the test host (Host: index.test:8080)"
    ]
    assert result.network is not None
    (conn,) = result.network.allowed
    assert (conn.host, conn.port) == ("index.test", 8080) and conn.bytes_down > 0
    assert result.network.denied == []


def test_allowed_host_over_connect(client: SyncClient, testhost: NetHost) -> None:
    result = run(client, CONNECT, ["index.test:8443", f"{testhost.net}:8443"], "index.test:8443")
    assert lines(result) == ["HTTP/1.1 200 Connection established", "ECHO ping through the tunnel"]


def test_unlisted_host_gets_403_naming_it(client: SyncClient, testhost: NetHost) -> None:
    result = run(
        client,
        FETCH,
        ["index.test:8080", f"{testhost.net}:8080"],
        "http://unlisted.test:8080/hello",
    )
    (line,) = lines(result)
    assert line.startswith(
        "HTTP 403 http://unlisted.test:8080/hello sandboxd egress proxy refused unlisted.test:8080"
    )
    assert "not in this run's allowlist" in line
    assert result.network is not None and result.network.denied[0].host == "unlisted.test"


def test_wildcard_and_port_rules(client: SyncClient, testhost: NetHost) -> None:
    allow = ["*.example.org:8080", "index.test", f"{testhost.net}:8080"]
    result = run(
        client,
        FETCH,
        allow,
        "http://api.example.org:8080/hello",
        "http://example.org:8080/hello",
        "http://index.test:8080/hello",
    )
    got = [ln.split()[0:2] for ln in lines(result)]
    assert got == [["OK", "http://api.example.org:8080/hello"], ["HTTP", "403"], ["HTTP", "403"]]


def test_redirect_to_unlisted_host_is_refused(client: SyncClient, testhost: NetHost) -> None:
    result = run(
        client,
        FETCH,
        ["index.test:8080", f"{testhost.net}:8080"],
        "http://index.test:8080/redirect",
    )
    (line,) = lines(result)
    assert line.startswith("HTTP 403") and "unlisted.test:8080" in line
    assert result.network is not None
    assert [c.host for c in result.network.allowed] == ["index.test"]
    assert [c.host for c in result.network.denied] == ["unlisted.test"]


def test_name_resolving_to_loopback_is_refused(client: SyncClient) -> None:
    result = run(client, FETCH, ["evil.test:8080"], "http://evil.test:8080/")
    (line,) = lines(result)
    assert line.startswith("HTTP 403") and "resolves to 127.0.0.1" in line


def test_a_trusted_name_may_resolve_privately(client: SyncClient) -> None:
    """`trusted_private_names`: a local mirror by name, with no IP rule; other names that
    resolve to the same address stay refused, and trust never reaches loopback."""
    result = run(client, FETCH, ["mirror.test:8080"], "http://mirror.test:8080/hello")
    assert lines(result) == [
        "OK http://mirror.test:8080/hello hello from the test host (Host: mirror.test:8080)"
    ]
    (conn,) = result.network.allowed if result.network else ()
    assert "trusted to resolve privately" in conn.reason
    (untrusted,) = lines(run(client, FETCH, ["unlisted.test:8080"], "http://unlisted.test:8080/"))
    assert untrusted.startswith("HTTP 403") and "private or special address" in untrusted
    (loop,) = lines(
        run(client, FETCH, ["trusted-loop.test:8080"], "http://trusted-loop.test:8080/")
    )
    assert loop.startswith("HTTP 403") and "resolves to 127.0.0.1" in loop


def test_name_resolving_to_a_private_address_needs_a_cidr_rule(client: SyncClient) -> None:
    result = run(client, FETCH, ["index.test:8080"], "http://index.test:8080/hello")
    (line,) = lines(result)
    assert line.startswith("HTTP 403") and "private or special address" in line


def test_ip_literal_needs_a_cidr_rule(client: SyncClient, testhost: NetHost) -> None:
    url = f"http://{testhost.ip}:8080/hello"
    refused = run(client, FETCH, ["index.test:8080"], url)
    assert lines(refused)[0].startswith("HTTP 403") and "IP literal" in refused.stdout
    allowed = run(client, FETCH, [f"{testhost.net}:8080"], url)
    assert lines(allowed)[0].startswith("OK")


def test_raw_connections_that_skip_the_proxy_reach_nothing(
    client: SyncClient, testhost: NetHost
) -> None:
    code = (
        "import socket, errno\n"
        f"for kind, addr in [('tcp', ('{testhost.ip}', 8080)), ('udp', ('{testhost.ip}', 53))]:\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == 'tcp' else "
        "socket.SOCK_DGRAM)\n"
        "    s.settimeout(3)\n"
        "    try:\n        s.connect(addr); s.send(b'x'); print('BREACH', kind)\n"
        "    except OSError as e:\n        print('BLOCKED', kind, errno.errorcode[e.errno])\n"
    )
    result = run(client, code, ["index.test:8080", f"{testhost.net}:8080"])
    assert lines(result) == ["BLOCKED tcp ENETUNREACH", "BLOCKED udp ENETUNREACH"]


def test_daemon_api_unreachable_whatever_the_rules(
    client: SyncClient, egress_daemon: Daemon
) -> None:
    port = egress_daemon.port
    result = run(client, CONNECT, [f"127.0.0.0/8:{port}", f"localhost:{port}"], f"127.0.0.1:{port}")
    out = lines(result)
    assert out[0] == "HTTP/1.1 403 Forbidden" and "never reachable" in out[1]


def pip_install(client: SyncClient, allow: list[str]) -> RunResult:
    return client.run(
        language="bash",
        code="python3 -m pip install --disable-pip-version-check --no-cache-dir "
        "--break-system-packages --index-url http://index.test:8080/simple/ "
        "--trusted-host index.test --target lib "
        "tinypkg 2>&1 | tail -3; PYTHONPATH=lib python3 -c 'import tinypkg; print(tinypkg.VALUE)'",
        network={"mode": "allowlist", "allow": allow},
        limits={"wall_time_s": 60, "cpu_time_s": 60, "memory_mib": 512},
    )


def test_pip_install_from_an_allowed_index(client: SyncClient, testhost: NetHost) -> None:
    result = pip_install(client, ["index.test:8080", f"{testhost.net}:8080"])
    assert result.stdout.splitlines()[-1] == "42", result.stdout + result.stderr


def test_the_download_cache_serves_a_second_install(client: SyncClient, testhost: NetHost) -> None:
    """pip, pointed at the tenant's download cache by the daemon, fetches the wheel once: the
    next install, in another run (another uid), takes it from the cache."""
    allow = ["index.test:8080", f"{testhost.net}:8080"]
    install = (
        "python3 -m pip install --disable-pip-version-check --break-system-packages "
        "--index-url http://index.test:8080/simple/ --trusted-host index.test --target lib "
        "tinypkg; python3 -c 'import urllib.request as u; "
        'print("served", u.urlopen("http://index.test:8080/served").read().decode())\''
    )
    served = []
    for _ in range(2):
        result = client.run(
            language="bash",
            code=install,
            download_cache=True,
            network={"mode": "allowlist", "allow": allow},
            limits={"wall_time_s": 60, "cpu_time_s": 60, "memory_mib": 512},
        )
        assert "Successfully installed tinypkg" in result.stdout, result.stdout + result.stderr
        served.append(int(result.stdout.split("served ")[-1]))
    assert served[1] == served[0]  # not fetched again
    (cached,) = [line for line in result.stdout.splitlines() if "Using cached" in line]
    assert "tinypkg-1.0-py3-none-any.whl" in cached


def test_pip_install_from_an_unlisted_index_fails(client: SyncClient, testhost: NetHost) -> None:
    result = pip_install(client, ["*.example.org"])
    assert "42" not in result.stdout.splitlines()
    assert result.network is not None and result.network.denied


@pytest.mark.parametrize(
    ("network", "error", "field"),
    [
        ({"mode": "allowlist", "allow": []}, InvalidRequest, "network"),
        ({"mode": "none", "allow": ["x.example.org"]}, InvalidRequest, "network"),
        ({"mode": "allowlist", "allow": ["not a host"]}, InvalidRequest, "network"),
        (
            {"mode": "allowlist", "allow": [f"h{i}.example.org" for i in range(9)]},
            LimitTooHigh,
            "network.allow",
        ),
    ],
)
def test_bad_allowlists(
    client: SyncClient, network: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as err:
        client.run(code="", network=network)
    assert getattr(err.value, "field", None) == field


def test_daemon_can_forbid_allowlists(workdir: Any) -> None:
    d = Daemon(workdir, "noegress", egress={"allowlists": False}).start()
    try:
        with d.client() as c:
            with pytest.raises(InvalidRequest) as err:
                c.run(code="", network={"mode": "allowlist", "allow": ["example.com"]})
            assert err.value.field == "network.mode"
            assert c.info().capabilities.network_modes == ["none"]
    finally:
        assert d.stop() == 0


def test_sandbox_runs_use_the_sandboxes_allowlist(client: SyncClient, testhost: NetHost) -> None:
    sb = client.create_sandbox(
        network={"mode": "allowlist", "allow": ["index.test:8080", f"{testhost.net}:8080"]},
        limits={"disk_mib": 8},
    )
    try:
        result = client.run_in_sandbox(
            sb.id, command=["python3", "-c", FETCH, "http://index.test:8080/hello"]
        )
        assert result.stdout.startswith("OK http://index.test:8080/hello")
        closed = client.run_in_sandbox(
            sb.id,
            command=["python3", "-c", FETCH, "http://index.test:8080/hello"],
            network={"mode": "none"},
        )
        assert closed.stdout.startswith("ERR")
    finally:
        client.delete_sandbox(sb.id)


def test_host_header_is_the_checked_name(client: SyncClient, testhost: NetHost) -> None:
    code = (
        "import urllib.request\n"
        "req = urllib.request.Request('http://index.test:8080/hello', headers={'Host': 'x.test'})\n"
        "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
    )
    result = run(client, code, ["index.test:8080", f"{testhost.net}:8080"])
    assert lines(result) == ["hello from the test host (Host: index.test:8080)"]
