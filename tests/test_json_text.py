"""The stores' JSON text (callschedule._json): the text json.dumps writes, the values and errors
json.loads gives, whatever the value."""

from __future__ import annotations

import json
import math

import pytest

from callschedule import _json

VALUES = [
    {"to": "+15551234567", "agent": "bench"},
    {},
    [],
    {"nested": {"list": [1, 2.5, None, True, False, "x"]}, "n": -3},
    {"unicode": "café ☎ 😀", "quote": 'say "hi"\n\t\\'},
    {"big": 2**70, "small": -(2**70), "float": 1e-300},
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    "just text",
    42,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_dumps_writes_the_text_json_dumps_writes(value: object) -> None:
    assert _json.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_loads_reads_back_what_json_loads_reads(value: object) -> None:
    text = json.dumps(value)
    assert repr(_json.loads(text)) == repr(json.loads(text))  # repr: NaN != NaN


def test_dumps_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        _json.dumps({"when": object()})


def test_dumps_refuses_a_cyclic_value() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(RecursionError):
        _json.dumps(cyclic)


@pytest.mark.parametrize("text", ["", "{", "nope", '{"a": 1} trailing', "[1, 2", '{"a" 1}'])
def test_loads_gives_json_loads_error_for_text_that_is_not_json(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        _json.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_loads_allows_the_whitespace_json_loads_allows() -> None:
    assert _json.loads(' {"a": 1} \n') == {"a": 1}
