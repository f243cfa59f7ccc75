"""Built-in authentication: API keys kept in the store, secrets hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from callschedule.hookspecs import hookimpl

if TYPE_CHECKING:
    from callschedule._scheduler import CallScheduler

#: Compared against when the key is unknown, so both answers take the same time.
_DUMMY_HASH = hashlib.sha256(b"callschedule-unknown-key").hexdigest()


def new_key_pair() -> tuple[str, str]:
    """A fresh (api_key, api_secret): the key is an identifier, the secret 256 random bits."""
    return f"csk_{secrets.token_hex(12)}", secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret.

    SHA-256 suffices because secrets are 256 random bits, out of reach of guessing; a slow
    password hash would only slow every request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@hookimpl(trylast=True)
def callschedule_authenticate(scheduler: CallScheduler, api_key: str, api_secret: str) -> str | None:
    """Look the key up in the scheduler's store; refuse unknown, revoked and wrong alike."""
    stored = scheduler.store.get_api_key(api_key) if api_key else None
    expected = stored.secret_hash if stored is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_secret(api_secret))
    if stored is None or stored.revoked_at is not None or not matches:
        return None
    return stored.organization_id
