"""The stores' JSON text (callschedule._json): the text json.dumps writes, the values and errors
json.loads gives, whatever the value."""

from __future__ import annotations

import json
import math

import pytest

from callschedule import _json

NOT_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
VALUES = [
    {"to": "+15551234567", "agent": "bench"},
    {},
    [],
    {"nested": {"list": [1, 2.5, None, True, False, "x"]}, "n": -3},
    {"unicode": "café ☎ 😀", "quote": 'say "hi"\n\t\\'},
    {"big": 2**70, "small": -(2**70), "float": 1e-300},
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    NOT_FINITE,
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


def test_dumps_refuses_nesting_too_deep_as_json_dumps_does() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        _json.dumps(deep)


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
FINITE_VALUES = [value for value in VALUES if value is not NOT_FINITE]


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


def _no_big_ints(text: str) -> int:
    if len(text) > 3:
        raise ValueError(f"too long: {text}")
    return int(text)


def _no_constants(name: str) -> None:
    raise ValueError(f"no {name}")


HOOKS = {"parse_int": _no_big_ints, "parse_constant": _no_constants}


@pytest.mark.parametrize("text", ['{"a": 12345}', ' {"a": NaN}', '{"a": [-Infinity]} '])
def test_make_loads_calls_the_hooks_and_passes_on_their_errors(text: str) -> None:
    loads = _json.make_loads(**HOOKS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"too long|no "):
        loads(text)


@pytest.mark.parametrize("text", ['{"a": 123}', " [1, 2] ", '"text"\n'])
def test_make_loads_reads_what_json_loads_reads_with_the_same_hooks(text: str) -> None:
    assert _json.make_loads(**HOOKS)(text) == json.loads(text, **HOOKS)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "[1,", "\ufeff{}", '{"a": 1} {"b": 2}', "\ufeff"])
@pytest.mark.parametrize("hooks", [{}, HOOKS], ids=["default", "hooks"])
def test_loads_gives_json_loads_errors_byte_order_mark_included(text: str, hooks: dict[str, object]) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        _json.make_loads(**hooks)(text)  # type: ignore[arg-type]
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text, **hooks)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("data", [b'{"to": "+1555"}', bytearray(b"[1, 2]"), '{"é": 1}'.encode("utf-16")])
def test_loads_reads_bytes_as_json_loads_does(data: bytes) -> None:
    assert _json.loads(data) == json.loads(data)


def test_dumps_refuses_a_cyclic_value_with_json_dumps_error() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    for dumps in (_json.dumps, _json.make_dumps(**ANSWER_SETTINGS)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Circular reference detected"):
            dumps(cyclic)


def test_dumps_still_writes_the_next_value_after_refusing_one() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError):
        _json.dumps(cyclic)
    shared = {"x": 1}
    assert _json.dumps([shared, shared]) == '[{"x": 1}, {"x": 1}]'
