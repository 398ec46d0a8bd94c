"""The Python client's snapshot methods over a real daemon: take one with labels, read and list
it, start a sandbox from it (async and blocking clients alike), and delete it, refused while a
fork exists."""

from __future__ import annotations

import asyncio

import pytest

from sandboxd.client import Client, SyncClient
from sandboxd.errors import Conflict, NotFound
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


def test_sync_client_snapshots(client: SyncClient) -> None:
    box = client.create_sandbox(language="bash", limits={"disk_mib": 16}).id
    try:
        client.run_in_sandbox(box, command=["bash", "-c", "echo kept > env.txt"])
        snap = client.create_snapshot(box, labels={"coder.env": "k1", "coder.repo": "r"})
        assert snap.sandbox_id == box and snap.labels == {"coder.env": "k1", "coder.repo": "r"}
        assert client.get_snapshot(snap.id) == snap
        assert snap.id in {s.id for s in client.list_snapshots()}
        fork = client.create_sandbox(
            language="bash", from_snapshot=snap.id, limits={"disk_mib": 16}
        ).id
        try:
            assert client.get_file(fork, "env.txt") == b"kept\n"
            with pytest.raises(Conflict):
                client.delete_snapshot(snap.id)
        finally:
            client.delete_sandbox(fork)
        client.delete_snapshot(snap.id)
        with pytest.raises(NotFound):
            client.get_snapshot(snap.id)
    finally:
        client.delete_sandbox(box)


def test_async_client_snapshots(daemon: Daemon) -> None:
    async def go() -> None:
        async with Client(daemon.url, token=daemon.token) as c:
            box = (await c.create_sandbox(language="bash", limits={"disk_mib": 16})).id
            try:
                snap = await c.create_snapshot(box)
                assert snap.labels == {}
                assert (await c.get_snapshot(snap.id)).id == snap.id
                fork = await c.create_sandbox(
                    language="bash", from_snapshot=snap.id, limits={"disk_mib": 16}
                )
                await c.delete_sandbox(fork.id)
                await c.delete_snapshot(snap.id)
                assert snap.id not in {s.id for s in await c.list_snapshots()}
            finally:
                await c.delete_sandbox(box)

    asyncio.run(go())
