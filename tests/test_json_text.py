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


# -- other settings: the HTTP adapter's answers and bodies --------------------------------------

ANSWER_SETTINGS = {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")}
FINITE_VALUES = [value for value in VALUES if "nan" not in value.__repr__()]


@pytest.mark.parametrize("value", FINITE_VALUES, ids=range(len(FINITE_VALUES)))
def test_make_dumps_writes_the_text_json_dumps_writes_with_the_same_settings(value: object) -> None:
    dumps = _json.make_dumps(**ANSWER_SETTINGS)  # type: ignore[arg-type]
    assert dumps(value) == json.dumps(value, **ANSWER_SETTINGS)  # type: ignore[arg-type]


def test_make_dumps_without_nan_refuses_nan_as_json_does() -> None:
    dumps = _json.make_dumps(allow_nan=False)
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"x": math.inf})


def test_make_dumps_keeps_a_lone_surrogate_for_the_caller_to_refuse_when_encoding() -> None:
    text = _json.make_dumps(ensure_ascii=False)({"x": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")


def _no_floats(text: str) -> float:
    raise ValueError(f"no floats here: {text}")


@pytest.mark.parametrize("text", ['{"a": 1.5}', ' {"a": 1.5}', '{"a": [2.5]} '])
def test_make_loads_calls_the_decoders_hooks_and_passes_on_their_errors(text: str) -> None:
    loads = _json.make_loads(json.JSONDecoder(parse_float=_no_floats))
    with pytest.raises(ValueError, match="no floats here"):
        loads(text)


@pytest.mark.parametrize("text", ["", "[1,", "\ufeff{}", '{"a": 1} {"b": 2}'])
def test_make_loads_gives_the_decoders_errors(text: str) -> None:
    decoder = json.JSONDecoder(parse_float=_no_floats)
    with pytest.raises(json.JSONDecodeError) as ours:
        _json.make_loads(decoder)(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        decoder.decode(text)
    assert str(ours.value) == str(theirs.value)
