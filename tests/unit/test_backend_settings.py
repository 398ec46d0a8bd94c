"""Backends by name in the settings, built through the registry by their config's `type`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from sandboxd.backends import registry
from sandboxd.backends.docker.backend import DockerBackend
from sandboxd.backends.fake import FakeBackend
from sandboxd.backends.nsjail.backend import NsjailBackend
from sandboxd.http.app import make_app, make_backends
from sandboxd.service import auth
from sandboxd.settings import Settings
from tests.unit.conftest import unit_settings


def settings(tmp_path: Path, **fields: Any) -> Settings:
    return unit_settings(tmp_path, **fields)


def test_default_is_one_nsjail_backend(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert list(s.backends) == ["nsjail"] and s.backends["nsjail"].type == "nsjail"


def test_a_backend_named_after_a_type_needs_no_type(tmp_path: Path) -> None:
    s = settings(tmp_path, backends={"nsjail": {}, "docker": {"pool": {"enabled": False}}})
    assert {name: c.type for name, c in s.backends.items()} == {
        "nsjail": "nsjail",
        "docker": "docker",
    }
    assert s.backend_config("docker") is s.backends["docker"]
    named = settings(tmp_path, backends={"jail": {"type": "nsjail"}}, default_backend="jail")
    assert named.backend_config("nsjail") is named.backends["jail"]
    assert named.backend_config("docker") is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"backend": {"rootfs": "/x"}}, "[backends.nsjail]"),
        ({"docker": {"enabled": True}}, "[backends.docker]"),
        ({"backends": {"docker": {}}}, "default_backend 'nsjail' is not one of the backends"),
        ({"backends": {"nsjail": {}, "two": {"type": "nsjail"}}}, "at most one backend of each"),
        ({"backends": {"nsjail": {}, "vm": {}}}, "type"),  # no such type to infer
        ({"backends": {"Bad Name": {"type": "nsjail"}}}, "pattern"),
        ({"backends": {"nsjail": {"rootfs": "/x", "bogus": 1}}}, "bogus"),
    ],
)
def test_bad_backend_settings_say_what_to_change(
    tmp_path: Path, fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError) as err:
        settings(tmp_path, **fields)
    assert says in str(err.value)


def test_every_registered_type_has_its_settings_and_its_class() -> None:
    union = get_args(get_args(registry.BackendConfig)[0])
    config_types = {model.model_fields["type"].default for model in union}
    assert config_types == set(registry.TYPES)
    for type_name in registry.TYPES:
        assert registry.implementation(type_name).name == type_name


def test_make_backends_builds_each_configured_backend_by_type(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        backends={"nsjail": {"nofile": 64}, "containers": {"type": "docker", "nofile": 99}},
    )
    built = make_backends(s)
    assert set(built) == {"nsjail", "containers"}
    assert isinstance(built["nsjail"], NsjailBackend) and built["nsjail"].config.nofile == 64
    assert isinstance(built["containers"], DockerBackend)
    assert built["containers"].config.nofile == 99


async def test_requests_choose_backends_by_name(tmp_path: Path) -> None:
    """A name the daemon has runs there; an unknown or malformed name is a 400 on `backend`."""
    main, other = FakeBackend(), FakeBackend()
    app = make_app(settings(tmp_path), backends={"nsjail": main, "other": other})
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        token = (tmp_path / "state" / auth.ADMIN_TOKEN_FILE).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        for name, expect in (("other", other), (None, main)):
            body = {"code": "print('x')", **({"backend": name} if name else {})}
            resp = await client.post("/v1/runs", json=body, headers=headers)
            assert resp.status == 200, await resp.text()
            assert len(expect.calls) == 1
        for bad in ("vm", "Not A Name"):
            resp = await client.post("/v1/runs", json={"backend": bad}, headers=headers)
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["field"] == "backend", error
    finally:
        await client.close()
