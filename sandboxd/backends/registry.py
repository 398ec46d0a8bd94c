"""Every backend type the daemon knows: its settings model and where its implementation lives.

The settings name backends by the `type` of their config (`[backends.<name>] type = "nsjail"`);
this table maps that discriminator to the implementation, imported only when a daemon is
configured with it (so a host without the Docker SDK never imports it). Adding a backend is a
folder under `backends/` (its `backend.py` and `settings.py`) plus one entry here.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

from pydantic import Field

from sandboxd.backends.docker.settings import DockerConfig
from sandboxd.backends.nsjail.settings import NsjailConfig

#: One backend's settings; pydantic picks the model by its `type`.
BackendConfig = Annotated[NsjailConfig | DockerConfig, Field(discriminator="type")]

#: `type` → "module:class" of the backend, each constructed as `Class(settings, config)`.
IMPLEMENTATIONS: dict[str, str] = {
    "nsjail": "sandboxd.backends.nsjail.backend:NsjailBackend",
    "docker": "sandboxd.backends.docker.backend:DockerBackend",
}
TYPES = tuple(IMPLEMENTATIONS)


def implementation(type_name: str) -> Any:
    """The class of backend `type_name`, imported now. ImportError when its module (or a
    library it needs, like the Docker SDK) is missing."""
    module, _, name = IMPLEMENTATIONS[type_name].partition(":")
    return getattr(importlib.import_module(module), name)
