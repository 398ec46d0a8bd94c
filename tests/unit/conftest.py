"""The unit tier: no root, no nsjail, no Docker, no network beyond loopback.

The daemon's application is built in-process (`make_app`) over `FakeBackend`, with its state
dir and uid-lock dir in a tmp dir, and reached over aiohttp's test client on loopback.
Persistent sandboxes are left to the real tiers: their disks are loop mounts, which need root.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from sandboxd.backends.fake import FakeBackend
from sandboxd.http.app import make_app
from sandboxd.http.keys import STORE
from sandboxd.service import auth
from sandboxd.settings import Settings


@dataclass
class App:
    """The app under test, its fake backend, and a client holding the admin token."""

    app: Application
    backend: FakeBackend
    http: TestClient[object, Application]
    token: str

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def token_with(self, *scopes: str, tenant: str = "t1") -> str:
        store = self.app[STORE]
        token, _ = await store.call(lambda db: auth.create_token(db, tenant, list(scopes)))
        return token


def unit_settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", lock_dir=tmp_path / "uid-locks", **fields)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    umask = os.umask(0o022)
    os.umask(umask)
    backend = FakeBackend()
    application = make_app(unit_settings(tmp_path), backends={"nsjail": backend})
    client: TestClient[object, Application] = TestClient(TestServer(application))
    await client.start_server()
    try:
        token = (tmp_path / "state" / auth.ADMIN_TOKEN_FILE).read_text().strip()
        yield App(application, backend, client, token)
    finally:
        await client.close()
        os.umask(umask)  # the daemon sets 077 for itself; the test process gets its own back
