"""JSON text through ``json``'s C encoder and scanner, called without the Python frames around
them: what the stores write and read back, and the HTTP adapter's bodies.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder on every call and reach it
through two Python functions; ``json.loads`` goes through three and two regular expressions.
A store pays that for every payload and event it writes or reads, several times per change, and
the adapter for every request and answer. What is written is the same text ``json`` writes with
the same settings, and what is read the same values or the same errors; where the C parts are
missing (another interpreter), these fall back to ``json`` itself.
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


def make_dumps(
    *, ensure_ascii: bool = True, allow_nan: bool = True, separators: tuple[str, str] = (", ", ": ")
) -> Callable[[Any], str]:
    """``json.dumps`` with these settings (and no others), as one C call.

    There is no circular check: what reaches it is a value the library has already checked (a
    payload, an outcome) or built itself (an event's data, an answer). A cyclic value reaching it
    anyway is refused with :class:`RecursionError`, before anything is written.
    """
    item_separator, key_separator = separators
    if _c_encoder is None:  # pragma: no cover - CPython has it
        return json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=separators).encode
    encode = _c_encoder(
        None,  # markers: no circular check
        json.JSONEncoder().default,  # TypeError for what JSON has no type for
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring,
        None,  # indent
        key_separator,
        item_separator,
        False,  # sort_keys
        False,  # skipkeys
        allow_nan,
    )
    join = "".join

    def dumps(value: Any) -> str:
        """The JSON text of ``value``."""
        return join(encode(value, 0))

    return dumps


def make_loads(decoder: json.JSONDecoder | None = None) -> Callable[[str], Any]:
    """``decoder.decode`` (``json.loads`` by default), reaching its C scanner directly.

    Text that the scanner does not take whole (not JSON, whitespace around the value, something
    after it) goes through ``decoder.decode`` itself: the same value, or the same error.
    """
    decoder = decoder or json.decoder.JSONDecoder()
    if _c_scanner is None:  # pragma: no cover - CPython has it
        return decoder.decode
    scan = _c_scanner(decoder)
    decode = decoder.decode

    def loads(text: str) -> Any:
        """The value of ``text``, or the :class:`json.JSONDecodeError` json gives."""
        try:
            value, end = scan(text, 0)
        except StopIteration:  # not JSON where it starts: json names the problem
            return decode(text)
        if end != len(text):  # something after the value (json allows only whitespace)
            return decode(text)
        return value

    return loads


#: What the stores write: ``json.dumps(value)``, the same text.
dumps = make_dumps()
#: What the stores read: ``json.loads(text)``, the same value or error.
loads = make_loads()
