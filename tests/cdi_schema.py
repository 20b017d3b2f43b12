"""The official CDI JSON schema (tests/data/cdi-schema), as validators shared by every test package."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT7

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "cdi-schema"


def _forbid_unknown(node: Any) -> Any:
    """Copy of a schema where every object with declared properties refuses other keys."""
    if isinstance(node, dict):
        out = {k: _forbid_unknown(v) for k, v in node.items()}
        if "properties" in out and out.get("type") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_forbid_unknown(v) for v in node]
    return node


def cdi_validator(*, strict: bool) -> jsonschema.Draft7Validator:
    """The official schema; ``strict`` also refuses unknown fields (except ``deviceNodes[].fileMode``).

    CDI's Go types carry ``deviceNodes[].fileMode``, which the JSON schema does not list; runtimes accept
    it and upstream writes it, so the strict copy allows exactly that one extra field.
    """
    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    if strict:
        defs = copy.deepcopy(defs)
        defs["definitions"]["DeviceNode"]["properties"]["fileMode"] = {"$ref": "#/definitions/uint32"}
        schema, defs = _forbid_unknown(copy.deepcopy(schema)), _forbid_unknown(defs)
    base = "file:///cdi-schema/"
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (base + "schema.json", DRAFT7.create_resource(schema)),
            (base + "defs.json", DRAFT7.create_resource(defs)),
        ]
    )
    return jsonschema.Draft7Validator({**schema, "$id": base + "schema.json"}, registry=registry)
