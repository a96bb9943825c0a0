"""The JSON Schema of the config format, generated from the IR models (for editors)."""

from __future__ import annotations

from typing import Any

from planner.config.models import ClusterConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_json_schema() -> dict[str, Any]:
    schema = ClusterConfig.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}
