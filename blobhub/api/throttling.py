"""Rate limits per principal (429 with Retry-After), counted in the shared cache."""

import math

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class PrincipalRateThrottle(SimpleRateThrottle):
    scope = "principal"

    def get_rate(self) -> str:
        # Read at request time, so the setting can change without re-importing the class.
        return settings.THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        caller = getattr(request.auth, "caller_id", None)
        ident = caller or f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"


class LoginRateThrottle(SimpleRateThrottle):
    """Password guessing: a tight limit per client address on `auth/login`."""

    scope = "login"

    def get_rate(self) -> str:
        return settings.LOGIN_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        return f"throttle:{self.scope}:{self.get_ident(request)}"


def login_refused(request) -> int | None:
    """For a login form outside DRF (Django admin, the console): the seconds to wait when this
    attempt is over the `auth/login` bucket of its address, else None (the attempt counts)."""
    throttle = LoginRateThrottle()  # DRF throttles read only request.META
    if throttle.allow_request(request, None):
        return None
    return max(1, math.ceil(throttle.wait() or throttle.duration))
