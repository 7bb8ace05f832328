"""The Materials Project's HTTP side: where and how fast to ask (``IngestConfig``), the
throttle, and our retries (``make_session``).

Ids go in chunks (``chunk_size`` per request; two requests per chunk, summary and
XAS). MP asks for at most about 25 requests per second per API key
(``MP_RATE_LIMIT_PER_SECOND``); mp-api 0.46 does no client-side throttling, so
every request waits for a slot at ``requests_per_second`` (default 10, capped
below MP's limit). mp-api's own session retries 429/502/504 three times with a
0.1 s backoff, invisibly, and not 500/503; we hand MPRester our own session whose
adapter retries 429 and 5xx itself, honouring ``Retry-After``, with exponential
backoff (``backoff_seconds`` × 2^attempt, capped), and counts every retry, so the
behaviour is ours, deterministic and visible. Only MPRester's construction calls
``/heartbeat`` with plain ``requests.get`` (cached per endpoint and process); it
is built inside a retry loop so a failing heartbeat is retried too.
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

MP_RATE_LIMIT_PER_SECOND = 25.0
DEFAULT_REQUESTS_PER_SECOND = 10.0
DEFAULT_CHUNK_SIZE = 100
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_SIZE = 1000  # documents per page; MP's maximum


class MPIngestError(Exception):
    """Ingestion stopped; materials stored before it are kept, and a re-run resumes."""


class MPConfigurationError(MPIngestError):
    """The API key, endpoint or an option is missing or invalid."""


class MPRequestError(MPIngestError):
    """The API kept failing (or could not be reached) after every retry."""


# --- Configuration -------------------------------------------------------------------


def _setting(name: str, default, cast):
    """``settings.NAME`` (which settings read from the environment), else ``default``."""
    value = getattr(settings, name, None)
    return cast(value) if value not in (None, "") else default


@dataclass(frozen=True)
class IngestConfig:
    """Where and how fast to ask. ``from_settings`` fills it from settings/env.

    Parameters
    ----------
    api_key
        A Materials Project API key (32 characters).
    endpoint
        The API's base URL; a local server can stand in for MP.
    chunk_size
        Materials per request.
    requests_per_second
        The throttle; at most ``MP_RATE_LIMIT_PER_SECOND``.
    max_retries
        Retries of one request on 429, 5xx or a connection error.
    backoff_seconds, backoff_max_seconds
        Wait ``backoff_seconds`` × 2^attempt before a retry (or what ``Retry-After``
        says), never more than ``backoff_max_seconds``.
    timeout_seconds
        Per request.
    """

    api_key: str
    endpoint: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    max_retries: int = 5
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    timeout_seconds: int = 60

    def __post_init__(self):
        if not self.api_key:
            raise MPConfigurationError(
                "MP_API_KEY is not set: get a key at https://next-gen.materialsproject.org/api and export MP_API_KEY"
            )
        if len(self.api_key) != 32:
            raise MPConfigurationError(f"MP_API_KEY has {len(self.api_key)} characters; MP keys have 32")
        if not re.match(r"^https?://", self.endpoint or ""):
            raise MPConfigurationError(f"MP_API_ENDPOINT {self.endpoint!r} is not an http(s) URL")
        if not self.endpoint.endswith("/"):
            # mp-api joins routes with urljoin, which drops a last path segment without "/".
            object.__setattr__(self, "endpoint", self.endpoint + "/")
        if not 1 <= self.chunk_size <= PAGE_SIZE:
            raise MPConfigurationError(f"chunk size must be in 1-{PAGE_SIZE}, got {self.chunk_size}")
        if not 0 < self.requests_per_second <= MP_RATE_LIMIT_PER_SECOND:
            raise MPConfigurationError(
                f"requests per second must be above 0 and at most MP's limit of {MP_RATE_LIMIT_PER_SECOND:g}, "
                f"got {self.requests_per_second:g}"
            )
        if self.max_retries < 0 or self.backoff_seconds < 0 or self.backoff_max_seconds < 0:
            raise MPConfigurationError("retries and backoff times cannot be negative")

    @classmethod
    def from_settings(cls, **overrides) -> IngestConfig:
        """Read ``MP_API_KEY``, ``MP_API_ENDPOINT`` and the tunables (``MP_CHUNK_SIZE``,
        ``MP_REQUESTS_PER_SECOND``, ``MP_MAX_RETRIES``, ``MP_BACKOFF_SECONDS``) from settings;
        ``overrides`` that are not None win."""
        values = {
            "api_key": getattr(settings, "MP_API_KEY", "") or "",
            "endpoint": getattr(settings, "MP_API_ENDPOINT", "") or "https://api.materialsproject.org/",
            "chunk_size": _setting("MP_CHUNK_SIZE", DEFAULT_CHUNK_SIZE, int),
            "requests_per_second": _setting("MP_REQUESTS_PER_SECOND", DEFAULT_REQUESTS_PER_SECOND, float),
            "max_retries": _setting("MP_MAX_RETRIES", 5, int),
            "backoff_seconds": _setting("MP_BACKOFF_SECONDS", 1.0, float),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def options(self) -> dict:
        """The tunables, for a Job's parameters (never the key or the endpoint: a worker
        takes those from its own settings)."""
        return {
            key: value for key, value in asdict(self).items() if key not in ("api_key", "endpoint", "timeout_seconds")
        }


# --- HTTP: throttle and retries -----------------------------------------------------


class Throttle:
    """Let at most ``rate`` requests start per second, evenly spaced, across threads."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this request's slot; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval  # the slot is reserved before sleeping: no two share it
        if start > now:
            self.sleep(start - now)
        return start - now


@dataclass
class HTTPStats:
    """What the transport did: requests sent, retries, statuses seen, time throttled."""

    requests: int = 0
    retries: int = 0
    statuses: Counter = field(default_factory=Counter)
    throttled_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "throttled_seconds": round(self.throttled_seconds, 3),
        }


def retry_delay(attempt: int, config: IngestConfig, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: ``Retry-After`` when the
    server sent one (seconds or an HTTP date), else exponential backoff; capped."""
    delay = config.backoff_seconds * 2**attempt
    if retry_after:
        try:
            delay = float(retry_after)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
                delay = (when - datetime.now(when.tzinfo or UTC)).total_seconds()
            except (TypeError, ValueError):
                pass  # a Retry-After we cannot read: keep the backoff
    return min(max(delay, 0.0), config.backoff_max_seconds)


class RetriesExhausted(requests.HTTPError):
    """A 429 or 5xx answer that persisted through every retry (its status in the message)."""


class ThrottledRetryingAdapter(HTTPAdapter):
    """A transport adapter that throttles every request and retries 429, 5xx and
    connection errors (urllib3's own retries are off, so each retry is counted here).

    When retries run out it raises ``RetriesExhausted`` (or re-raises the last
    connection error) instead of returning the failed response: mp-api would turn
    that response into an ``MPRestError`` whose text holds the URL, and it re-sends
    the whole query, split, whenever that text contains "422" or "414", so a port
    or an id with those digits (``mp-14221``) doubled the requests to a failing
    server. mp-api wraps a ``RequestException`` into an ``MPRestError`` untouched.
    """

    def __init__(self, config: IngestConfig, throttle: Throttle, stats: HTTPStats, sleep=time.sleep):
        super().__init__(max_retries=0)
        self.config, self.throttle, self.stats, self._sleep = config, throttle, stats, sleep

    def send(self, request, **kwargs):
        # Only reads are repeated: a retried write could be applied twice.
        retries = self.config.max_retries if request.method in ("GET", "HEAD") else 0
        attempt = 0
        while True:
            self.stats.throttled_seconds += self.throttle.wait()
            self.stats.requests += 1
            try:
                response = super().send(request, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt >= retries:
                    raise
                reason, retry_after = type(error).__name__, None
            else:
                self.stats.statuses[response.status_code] += 1
                if response.status_code not in RETRY_STATUSES:
                    return response
                if attempt >= retries:
                    response.close()
                    raise RetriesExhausted(
                        f"{_path(request.url)} answered HTTP {response.status_code} "
                        f"after {retries} {'retry' if retries == 1 else 'retries'}",
                        response=response,
                    )
                reason, retry_after = f"HTTP {response.status_code}", response.headers.get("Retry-After")
                response.close()  # hand the connection back to the pool before waiting
            delay = retry_delay(attempt, self.config, retry_after)
            attempt += 1
            self.stats.retries += 1
            logger.warning("%s: %s; retry %d/%d in %.2f s", _path(request.url), reason, attempt, retries, delay)
            self._sleep(delay)


def _path(url: str) -> str:
    return urlsplit(url).path or url


def make_session(config: IngestConfig, stats: HTTPStats | None = None, sleep=time.sleep) -> requests.Session:
    """A requests session for MPRester: the API key header, the throttle, our retries."""
    from mp_api.client import __version__ as mp_api_version

    session = requests.Session()
    session.headers.update(
        {"x-api-key": config.api_key, "user-agent": f"xas-topology-screening mp-api/{mp_api_version}"}
    )
    adapter = ThrottledRetryingAdapter(
        config, Throttle(config.requests_per_second, sleep=sleep), stats or HTTPStats(), sleep
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
