"""Bearer tokens for users (`auth/login`) and anonymous readers (`auth/core/anonymous`).

Tokens are signed, not stored: a token names its holder, its kind and its expiry, and
a user's tokens die with a password change because they carry a fragment of the
user's session hash.
"""

import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from orgs.models import User

SALT = "blobhub.orgs.tokens"
ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True)
class TokenClaims:
    kind: str
    user_id: str | None
    anonymous_id: str | None
    password_tag: str | None


class InvalidToken(Exception):
    pass


def issue_pair(*, user: User | None = None, anonymous_id: str | None = None) -> dict:
    if user is None and anonymous_id is None:
        anonymous_id = secrets.token_hex(8)
    now = time.time()
    access_expiry = now + settings.ACCESS_TOKEN_TTL_SECONDS
    base = {"u": str(user.id) if user else None, "a": anonymous_id, "p": _password_tag(user)}
    return {
        "access_token": _sign({**base, "k": ACCESS, "e": access_expiry}),
        "refresh_token": _sign({**base, "k": REFRESH, "e": now + settings.REFRESH_TOKEN_TTL_SECONDS}),
        "expires_at": int(access_expiry * 1000),
    }


def read(token: str, kind: str) -> TokenClaims:
    try:
        claims = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise InvalidToken("bad signature")
    if not isinstance(claims, dict) or claims.get("k") != kind:
        raise InvalidToken("wrong kind")
    if float(claims.get("e", 0)) <= time.time():
        raise InvalidToken("expired")
    return TokenClaims(kind, claims.get("u"), claims.get("a"), claims.get("p"))


def user_matches(claims: TokenClaims, user: User) -> bool:
    return user.is_active and secrets.compare_digest(claims.password_tag or "", _password_tag(user) or "")


def _sign(payload: dict) -> str:
    return signing.dumps(payload, salt=SALT)


def _password_tag(user: User | None) -> str | None:
    return user.get_session_auth_hash()[:16] if user is not None else None
