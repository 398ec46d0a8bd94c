"""The OpenAPI document, generated from the wire models (never written by hand)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from sandboxd import __version__
from sandboxd.models import ErrorResponse, Health, Info, RunRequest, RunResult

REF = "#/components/schemas/{model}"


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=schema_name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": _json("ErrorResponse")} for c in codes}


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [
            (RunRequest, "validation"),
            (RunResult, "serialization"),
            (ErrorResponse, "serialization"),
            (Health, "serialization"),
            (Info, "serialization"),
        ],
        ref_template=REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "sandboxd", "version": __version__},
        "paths": {
            "/healthz": {
                "get": {"responses": {"200": {"description": "alive", "content": _json("Health")}}}
            },
            "/v1/info": {
                "get": {
                    "responses": {
                        "200": {"description": "backend and limits", "content": _json("Info")}
                    }
                }
            },
            "/v1/runs": {
                "post": {
                    "summary": "Run code once in a fresh sandbox",
                    "requestBody": {"required": True, "content": _json("RunRequest")},
                    "responses": {
                        "200": {
                            "description": "the run's result, whatever its status",
                            "content": _json("RunResult"),
                        },
                        **_errors(400, 413, 503),
                    },
                }
            },
        },
        "components": {"schemas": defs.get("$defs", {})},
    }
