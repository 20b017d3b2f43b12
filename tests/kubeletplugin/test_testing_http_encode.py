"""The test API server's answers are encoded with orjson, and what orjson refuses as the standard
library would encode (or refuse) it."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest

from nvdra.kubeletplugin.testing_http import encode_json


class Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "ResourceClaim", "metadata": {"name": "c", "labels": {"ü": "ß"}}, "n": [1, 2.5, None, True]},
        {"status": {"code": 404, "message": 'a "quoted" \\ name\n'}},
        {1: "a non-string key"},  # orjson refuses: the standard library writes "1"
        {"big": 2**70},  # beyond 64 bits
        {"enum": Color.RED},  # a str subclass
        [],
    ],
)
def test_answers_read_back_as_the_standard_library_would_write_them(body: Any) -> None:
    assert json.loads(encode_json(body)) == json.loads(json.dumps(body))


def test_what_neither_can_encode_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_json({"a": object()})
