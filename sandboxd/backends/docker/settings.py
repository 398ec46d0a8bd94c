"""The Docker backend's settings: the engine, the image per language, warm containers."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandboxd.backends.host.pool_settings import PoolSettings
from sandboxd.models import Language


class DockerConfig(BaseModel):
    """Settings of one Docker backend (`[backends.<name>]` with `type = "docker"`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["docker"] = "docker"
    docker_url: str | None = Field(None, description="Engine address; default: the local one.")
    images: dict[str, str] = Field(
        default_factory=lambda: {
            "python": "sandboxd/python:bookworm",
            "bash": "sandboxd/python:bookworm",
            "node": "sandboxd/node:bookworm",
        },
        description="Image per language, when a request names none.",
    )
    nofile: int = Field(1024, ge=16)
    pool: PoolSettings = Field(
        default_factory=PoolSettings,
        description="Warm containers (the python and node images, default limits), per profile.",
    )

    @field_validator("images")
    @classmethod
    def _every_language(cls, images: dict[str, str]) -> dict[str, str]:
        missing = sorted(set(get_args(Language)) - set(images))
        if missing:
            raise ValueError(f"images must name an image for every language; missing {missing}")
        return images
