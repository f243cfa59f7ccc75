"""JSON text through ``json``'s C encoder and scanner, called without the Python frames around
them: what the stores write and read back, and the HTTP adapter's bodies.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder on every call and reach it
through two Python functions; ``json.loads`` goes through three and two regular expressions.
A store pays that for every payload and event it writes or reads, several times per change, and
the adapter for every request and answer. Whatever the fast path does not take whole (an error,
whitespace around a value, bytes to read) goes to ``json.dumps`` or ``json.loads`` itself with the
same options, so the text, the values and the errors are json's own; where the C parts are
missing (another interpreter), these are json's functions.
"""

from __future__ import annotations

import functools
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
    """``json.dumps`` with these options (and no others), as one C call.

    The C call makes no circular check; when it fails on a cycle (or on nesting too deep for the
    stack) it fails with :class:`RecursionError`, and ``json.dumps`` then tells the two apart: a
    :class:`ValueError` for a cycle, as json gives. Other errors are json's, unchanged.
    """
    slow: Callable[[Any], str] = functools.partial(
        json.dumps, ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=separators
    )
    if _c_encoder is None:  # pragma: no cover - CPython has it
        return slow
    item_separator, key_separator = separators
    encode = _c_encoder(
        None,  # markers: no circular check (json.dumps makes it, below, if the value fails)
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
        """The JSON text of ``value``, as ``json.dumps`` writes it."""
        try:
            return join(encode(value, 0))
        except RecursionError:  # a cycle or deep nesting: json says which
            return slow(value)

    return dumps


def make_loads(
    *, parse_int: Callable[[str], Any] | None = None, parse_constant: Callable[[str], Any] | None = None
) -> Callable[[str | bytes], Any]:
    """``json.loads`` with these options (and no others), reaching its C scanner directly.

    Text that the scanner does not take whole (not JSON, whitespace around the value, something
    after it, a byte order mark) and bytes go to ``json.loads`` itself: the same value, or the
    same error. An error raised by ``parse_int`` or ``parse_constant`` passes through as it is.
    """
    slow: Callable[[str | bytes], Any] = functools.partial(
        json.loads, parse_int=parse_int, parse_constant=parse_constant
    )
    if _c_scanner is None:  # pragma: no cover - CPython has it
        return slow
    scan = _c_scanner(json.JSONDecoder(parse_int=parse_int, parse_constant=parse_constant))

    def loads(text: str | bytes) -> Any:
        """The value of ``text``, or the error ``json.loads`` gives."""
        if text.__class__ is str:
            try:
                value, end = scan(text, 0)
            except StopIteration:  # not JSON where it starts: json names the problem
                return slow(text)
            if end == len(text):  # else something follows the value: json allows only whitespace
                return value
        return slow(text)

    return loads


#: What the stores write: ``json.dumps(value)``, the same text.
dumps = make_dumps()
#: What the stores read: ``json.loads(text)``, the same value or error.
loads = make_loads()
