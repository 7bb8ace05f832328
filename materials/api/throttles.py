"""Throttles that read their rates from the settings at request time.

DRF's own throttle classes copy ``DEFAULT_THROTTLE_RATES`` once, at import; these
read ``api_settings`` when they are built, so a changed setting (a test's
``override_settings``, or a deployment's environment) takes effect. Counters live in
Django's default cache: per process with the default LocMem cache, so a deployment
with several gunicorn workers should point ``CACHES["default"]`` at Redis.

Scopes: ``anon`` (per client IP), ``user`` (per user), and the stricter ``classify``
``upload`` and ``login`` for the expensive or sensitive POSTs. A scope missing from the settings falls back
to the defaults below; a scope set to an empty rate (``API_THROTTLE_ANON=``) is off.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

FALLBACK_RATES = {
    "anon": "600/minute",
    "user": "6000/minute",
    "classify": "60/minute",
    "upload": "20/hour",
    "login": "20/minute",
}


def current_rate(scope: str) -> str | None:
    """The scope's rate ("600/minute"); None (an empty setting) turns the throttle off."""
    rates = api_settings.DEFAULT_THROTTLE_RATES or {}
    return rates.get(scope, FALLBACK_RATES.get(scope)) or None


class AnonThrottle(AnonRateThrottle):
    def get_rate(self):
        return current_rate(self.scope)


class UserThrottle(UserRateThrottle):
    def get_rate(self):
        return current_rate(self.scope)


class _PerClientScopedThrottle(SimpleRateThrottle):
    """A per-user (or per-IP when anonymous) throttle with a fixed scope."""

    def get_rate(self):
        return current_rate(self.scope)

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ClassifyThrottle(_PerClientScopedThrottle):
    scope = "classify"


class UploadThrottle(_PerClientScopedThrottle):
    scope = "upload"


class LoginThrottle(_PerClientScopedThrottle):
    scope = "login"


DEFAULT_THROTTLES = [AnonThrottle, UserThrottle]
