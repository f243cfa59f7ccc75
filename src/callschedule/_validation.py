"""Checks on the arguments of every public method, each failing with :class:`InvalidInput`."""

from __future__ import annotations

import functools
import time
import zoneinfo
from typing import Any

from callschedule import _json
from callschedule.exceptions import InvalidInput

#: 9999-12-31T23:59:59Z, the last second an RFC 3339 timestamp can show.
MAX_TIMESTAMP = 253402300799
MAX_ID_LENGTH = 200
#: Longer than any IANA time zone name (the longest are about 30 characters).
MAX_ZONE_LENGTH = 100
#: How deeply a payload's objects and arrays may nest.
MAX_PAYLOAD_DEPTH = 64


def timestamp(field: str, value: object) -> int:
    """Return ``value`` if it is a whole number of Unix seconds in years 1970-9999."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"expected an integer number of Unix seconds, got {_kind(value)}")
    if not 0 <= value <= MAX_TIMESTAMP:
        raise InvalidInput(field, f"{value} is outside 0..{MAX_TIMESTAMP} (years 1970-9999)")
    return value


def identifier(field: str, value: object) -> str:
    """Return ``value`` if it is a non-empty printable string of at most 200 characters."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected a string, got {_kind(value)}")
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable() or value != value.strip():
        raise InvalidInput(
            field, f"expected 1-{MAX_ID_LENGTH} printable characters without surrounding spaces"
        )
    return value


def timezone(field: str, value: object) -> str | None:
    """Return ``value`` if it is ``None`` or an IANA time zone name zoneinfo knows."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected an IANA time zone name, got {_kind(value)}")
    if len(value) > MAX_ZONE_LENGTH:
        raise InvalidInput(field, f"unknown time zone {value[:40]!r}...: longer than any IANA name")
    try:
        zone(value)
    # OSError: a folder of the database ("America") or a name the file system refuses
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(field, f"unknown time zone {value!r}") from None
    return value


def payload(field: str, value: object) -> dict[str, Any]:
    """Return ``value`` as the JSON object it is stored as (``None`` becomes ``{}``).

    It must be a dict with string keys that JSON can hold: no NaN or infinity, text that is
    valid UTF-8, at most :data:`MAX_PAYLOAD_DEPTH` levels of nesting. Tuples become lists and
    nested non-string keys strings, as they read back from any store.
    """
    if value is None:
        return {}
    # The messages name types only: a payload is the callee's personal data, kept out of errors.
    if not isinstance(value, dict):
        raise InvalidInput(field, f"expected a JSON object (a dict), got {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise InvalidInput(field, "expected a JSON object: its keys must be strings")
    stored: dict[str, Any] = _as_stored(field, value)
    return stored


def _as_stored(field: str, value: object) -> Any:
    """``value`` as it reads back from its JSON text, or :class:`InvalidInput` on ``field`` if
    it has no faithful JSON form or nests too deeply."""
    try:
        text = _STRICT_JSON(value)
        text.encode("utf-8")
    except UnicodeEncodeError:
        problem = "contains text that is not valid Unicode (a lone surrogate)"
    except ValueError as exc:
        if "Out of range float" in str(exc):
            problem = (
                "holds NaN or an infinite number (one too large for a float, such as 1e400, is infinite)"
            )
        elif "integer string conversion" in str(exc):  # the interpreter's limit on int-to-text
            problem = "holds an integer too long to write as text"
        else:
            problem = f"not JSON-serialisable: {exc}"
    except (TypeError, RecursionError) as exc:
        problem = f"not JSON-serialisable: {exc}"
    else:
        stored = _json.loads(text)
        # Each level of nesting opens a bracket: few brackets, no deep nesting (the common case).
        # Otherwise the depth is measured on what is stored.
        if text.count("{") + text.count("[") > MAX_PAYLOAD_DEPTH and _depth(stored) > MAX_PAYLOAD_DEPTH:
            raise _too_deep(field)
        return stored
    if _depth(value) > MAX_PAYLOAD_DEPTH:  # too deep is the error to name, whatever else is wrong
        raise _too_deep(field)
    raise InvalidInput(field, problem)


#: ``json.dumps(value, allow_nan=False, ensure_ascii=False)``, one C call (see ``_json``).
_STRICT_JSON = _json.make_dumps(ensure_ascii=False, allow_nan=False)


def _too_deep(field: str) -> InvalidInput:
    return InvalidInput(field, f"nested more than {MAX_PAYLOAD_DEPTH} levels deep")


def text(field: str, value: object) -> str:
    """Return ``value`` if it is a string that can be written as UTF-8."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected a string, got {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "contains text that is not valid Unicode (a lone surrogate)") from None
    return value


def _depth(value: object) -> int:
    """How deeply ``value``'s dicts and lists nest, without recursion (so any depth is measured)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_PAYLOAD_DEPTH:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def positive_int(field: str, value: object, *, maximum: int = 10_000) -> int:
    """Return ``value`` if it is an integer in 1..maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(field, f"expected an integer in 1..{maximum}, got {value!r}")
    return value


@functools.lru_cache(maxsize=512)
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The :class:`zoneinfo.ZoneInfo` for ``name``, cached."""
    return zoneinfo.ZoneInfo(name)


def rfc3339(seconds: int) -> str:
    """``seconds`` as RFC 3339 UTC with a ``Z``: 1748460000 → ``2025-05-28T19:20:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]
