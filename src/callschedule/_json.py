"""The JSON text of what the stores write and read back: ``json``'s C encoder and scanner,
called without the Python frames around them.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder on every call and reach it
through two Python functions; ``json.loads`` goes through three and two regular expressions.
A store pays that for every payload and event it writes or reads, several times per change.
What is written is the same text ``json.dumps`` writes; where the C parts are missing (another
interpreter), these fall back to ``json`` itself.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
import json.scanner
from collections.abc import Callable
from typing import Any

# The C parts json itself uses, None where the interpreter has none (typeshed omits them).
_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_scanner: Any = getattr(json.scanner, "c_make_scanner", None)


def _make_dumps() -> Callable[[Any], str]:
    if _c_encoder is None:  # pragma: no cover - CPython has it
        return json.JSONEncoder().encode
    # No circular check: a store writes values the library has already checked (a payload, an
    # outcome) or built itself (an event's data). A cyclic value reaching it anyway is refused
    # with RecursionError, before its transaction begins.
    encode = _c_encoder(
        None,  # markers: no circular check
        json.JSONEncoder().default,  # TypeError for what JSON has no type for
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )
    join = "".join

    def dumps(value: Any) -> str:
        """``json.dumps(value)``, the same text."""
        return join(encode(value, 0))

    return dumps


def _make_loads() -> Callable[[str], Any]:
    if _c_scanner is None:  # pragma: no cover - CPython has it
        return json.loads
    scan = _c_scanner(json.decoder.JSONDecoder())

    def loads(text: str) -> Any:
        """``json.loads(text)``: the value, or the same :class:`json.JSONDecodeError`."""
        try:
            value, end = scan(text, 0)
        except StopIteration:  # not JSON where it starts: json.loads names the problem
            return json.loads(text)
        if end != len(text):  # something after the value (json.loads allows only whitespace)
            return json.loads(text)
        return value

    return loads


dumps = _make_dumps()
loads = _make_loads()
