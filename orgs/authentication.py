"""Turning a request's credentials into a Principal (REST here; WebSocket reuses the functions)."""

import hashlib
import hmac
import ipaddress
import re
import secrets
from datetime import timedelta

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from orgs import tokens
from orgs.models import ApiKey, User
from orgs.principal import Principal

KEY_PATTERN = re.compile(r"^bh_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def new_api_key_secret() -> tuple[str, str, str]:
    """A fresh key as (key, lookup, hash). Only the lookup id and the hash are stored."""
    lookup = secrets.token_hex(6)
    key = f"bh_{lookup}_{secrets.token_urlsafe(32)}"
    return key, lookup, hash_key(key)


def hash_key(key: str) -> str:
    # The key carries 256 random bits, so one SHA-256 is as strong as a slow hash here.
    return hashlib.sha256(key.encode()).hexdigest()


def principal_from_api_key(key: str, client_ip: str | None = None) -> Principal | None:
    match = KEY_PATTERN.match(key)
    if not match:
        return None
    api_key = ApiKey.objects.select_related("org", "created_by").filter(lookup=match.group(1)).first()
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, hash_key(key)):
        return None
    if not api_key.is_usable:
        return None
    _touch(api_key)
    return Principal(user=api_key.created_by, api_key=api_key, client_ip=client_ip)


def principal_from_bearer(token: str, client_ip: str | None = None) -> Principal | None:
    try:
        claims = tokens.read(token, tokens.ACCESS)
    except tokens.InvalidToken:
        return None
    if claims.user_id is None:
        return Principal(anonymous_id=claims.anonymous_id, client_ip=client_ip)
    user = User.objects.filter(id=claims.user_id).first()
    if user is None or not tokens.user_matches(claims, user):
        return None
    return Principal(user=user, client_ip=client_ip)


def _touch(api_key: ApiKey) -> None:
    """Record use at most once a minute, so a busy key does not write on every request."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
    api_key.last_used_at = now


def client_ip(request: Request) -> str | None:
    return client_address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def client_address(remote_addr: str | None, forwarded_for: str | None) -> str | None:
    """The caller's address as the throttles read it (DRF's get_ident with NUM_PROXIES, which
    is TRUSTED_PROXIES): the address the last trusted proxy saw, from the entries those proxies
    appended to X-Forwarded-For; the entries before them are the client's to write. None when
    it is not an IP address (the audit log stores one)."""
    proxies = api_settings.NUM_PROXIES or 0
    address = remote_addr
    if proxies and forwarded_for:
        entries = forwarded_for.split(",")
        address = entries[-min(proxies, len(entries))].strip()
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request):
        key = request.META.get("HTTP_X_API_KEY")
        if key is None:
            return None
        principal = principal_from_api_key(key.strip(), client_ip(request))
        if principal is None:
            raise exceptions.AuthenticationFailed()
        # request.user stays anonymous: a key never acts with its creator's full rights.
        return AnonymousUser(), principal

    def authenticate_header(self, request: Request) -> str:
        return "X-API-Key"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed()
        principal = principal_from_bearer(token.strip(), client_ip(request))
        if principal is None:
            raise exceptions.AuthenticationFailed()
        return principal.user or AnonymousUser(), principal

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="blobhub"'


class SessionAuthentication(authentication.SessionAuthentication):
    """The web console: Django's session cookie, with DRF's CSRF check on writes."""

    def authenticate(self, request: Request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        return user, Principal(user=user, client_ip=client_ip(request))

    def enforce_csrf(self, request: Request) -> None:
        # Django's check reads the form body (`POST`) for a token; on the DRF request that
        # means parsing it, which views taking raw bodies (Stepflow, Skills: no parsers)
        # refuse with 415 whatever the token. The Django request reads forms only.
        super().enforce_csrf(request._request)


class IsAuthenticatedPrincipal(permissions.BasePermission):
    def has_permission(self, request: Request, view) -> bool:
        return isinstance(request.auth, Principal)


def principal_of(request: Request) -> Principal:
    principal = request.auth
    if not isinstance(principal, Principal):
        raise exceptions.NotAuthenticated()
    return principal
