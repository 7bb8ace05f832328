"""Ingesting Materials Project K-edge XANES with the official ``mp-api`` client.

For each material (an mp-id, or an ICSD id mapped to one) this fetches the summary
document (structure, symmetry, ICSD ids) and the K-edge XANES of every element from
MP's XAS endpoint (element spectra, site-weighted over inequivalent sites), and keeps
the material only if every element has a spectrum: the paper's rule for a usable
sample. Where ICSD metadata is supplied, the paper's ICSD quality filter
(``materials.icsd_quality``) applies too.

Requests
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

Storage
    A chunk's documents are all fetched and checked before any is written: a
    malformed document stops the run with an error naming it, and nothing of its
    chunk is stored. Each material is then written in its own transaction (material,
    spectra, ``has_spectra``), so an interruption (an error, Ctrl-C, kill -9) loses
    at most the material being written. Materials that already have an MP spectrum
    for every element are skipped before any request, so a re-run resumes where the
    last one stopped; the unique constraints on ``Material.mp_id`` and on
    (material, element, edge, source) keep concurrent runs from storing anything
    twice.

Provenance
    ``Spectrum.source_release`` and, for materials this creates,
    ``Material.source_release`` are ``"Materials Project <db_version>"``, the release
    the API reported; the material keeps its mp-id and gains the ICSD ids MP lists.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from requests.adapters import HTTPAdapter

from materials.chemistry import parse_formula, symmetry_of
from materials.models import Material, Spectrum

logger = logging.getLogger(__name__)

MP_RATE_LIMIT_PER_SECOND = 25.0
DEFAULT_REQUESTS_PER_SECOND = 10.0
DEFAULT_CHUNK_SIZE = 100
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_SIZE = 1000  # documents per page; MP's maximum
MIN_POINTS = 10
SUMMARY_FIELDS = [
    "material_id",
    "formula_pretty",
    "elements",
    "nsites",
    "structure",
    "symmetry",
    "database_IDs",
    "deprecated",
]
XAS_FIELDS = ["task_id", "absorbing_element", "edge", "spectrum_type", "spectrum", "last_updated"]
MP_ID_PATTERN = re.compile(r"^(mp|mvc)-(\d+|[a-z]+)$")

Progress = Callable[[str, int, int], None]


class MPIngestError(Exception):
    """Ingestion stopped; materials stored before it are kept, and a re-run resumes."""


class MPConfigurationError(MPIngestError):
    """The API key, endpoint or an option is missing or invalid."""


class MPRequestError(MPIngestError):
    """The API kept failing (or could not be reached) after every retry."""


class MalformedDocumentError(MPIngestError):
    """The API sent a document we cannot read; nothing of its chunk was stored."""


# --- Configuration -------------------------------------------------------------------


def _setting(name: str, default, cast):
    """``settings.NAME``, else the environment variable ``NAME``, else ``default``."""
    value = getattr(settings, name, None)
    if value is None or value == "":
        value = os.environ.get(name, "")
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
        """Read ``MP_API_KEY`` and ``MP_API_ENDPOINT`` from settings, the tunables from
        settings or the environment (``MP_CHUNK_SIZE``, ``MP_REQUESTS_PER_SECOND``,
        ``MP_MAX_RETRIES``, ``MP_BACKOFF_SECONDS``); ``overrides`` that are not None win."""
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


# --- Identifiers ----------------------------------------------------------------------


def normalize_mp_id(value) -> str:
    """An mp-id in the form catalogues and MP's pages use, ``mp-2657``.

    Accepts that form, emmet's AlphaID forms (``mp-aaaaadyf``) and the client's
    MPID/AlphaID objects.

    Raises
    ------
    ValueError
        If the value is not an mp-id.
    """
    from emmet.core.mpid import AlphaID

    text = str(getattr(value, "string", value)).strip().lower()
    if not MP_ID_PATTERN.match(text):
        raise ValueError(f"{value!r} is not a Materials Project id (like mp-2657)")
    return AlphaID(text).string


def parse_icsd_id(value) -> int:
    """``12345``, ``"12345"`` or ``"icsd-12345"`` → 12345."""
    text = str(value).strip().lower().removeprefix("icsd-").removeprefix("icsd")
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{value!r} is not an ICSD id (a positive integer)")
    return int(text)


def mp_ids_for_icsd(icsd_ids: Iterable[int]) -> tuple[dict[int, str], list[int]]:
    """Map ICSD ids to mp-ids through the materials already stored (catalogues such
    as Materiae list both). MP's API has no search by ICSD id.

    Returns
    -------
    tuple
        ``{icsd_id: mp_id}`` and the ICSD ids no stored material lists.
    """
    wanted = list(dict.fromkeys(int(i) for i in icsd_ids))
    remaining, mapping = set(wanted), {}
    rows = Material.objects.exclude(mp_id=None).order_by("id").values_list("mp_id", "icsd_ids")
    for mp_id, ids in rows.iterator(chunk_size=5000):
        for icsd_id in ids or []:
            if icsd_id in remaining:
                mapping[icsd_id] = mp_id
                remaining.discard(icsd_id)
    return mapping, [i for i in wanted if i in remaining]


def mp_ids_from_labels() -> list[str]:
    """mp-ids of stored materials with a catalogue label; those already complete are
    skipped by the ingestion itself."""
    rows = (
        Material.objects.exclude(mp_id=None)
        .exclude(mp_id="")
        .filter(labels__isnull=False)
        .order_by("id")
        .values_list("mp_id", flat=True)
        .distinct()
    )
    return list(dict.fromkeys(rows))


def complete_mp_ids(mp_ids: Iterable[str]) -> set[str]:
    """The mp-ids whose stored material already has an MP K-edge spectrum for every element."""
    ids, complete = list(mp_ids), set()
    for start in range(0, len(ids), 500):  # stay under SQLite's parameter limit
        materials = Material.objects.filter(mp_id__in=ids[start : start + 500]).values_list("pk", "mp_id", "elements")
        by_pk = {pk: (mp_id, set(elements)) for pk, mp_id, elements in materials}
        have: dict[int, set[str]] = {}
        spectra = Spectrum.objects.filter(
            material_id__in=list(by_pk), source=Spectrum.Source.MATERIALS_PROJECT, edge="K"
        ).values_list("material_id", "element")
        for material_id, element in spectra:
            have.setdefault(material_id, set()).add(element)
        complete.update(
            mp_id for pk, (mp_id, elements) in by_pk.items() if elements and elements <= have.get(pk, set())
        )
    return complete


# --- Documents ----------------------------------------------------------------------------


@dataclass
class FetchedSpectrum:
    element: str
    energies_ev: list[float]
    mu: list[float]
    settings: dict


@dataclass
class FetchedMaterial:
    mp_id: str
    formula: str
    elements: list[str]
    nsites: int
    structure: dict
    space_group_number: int
    icsd_ids: list[int]
    deprecated: bool
    spectra: dict[str, FetchedSpectrum] = field(default_factory=dict)


def _symbol(element) -> str:
    return str(getattr(element, "symbol", element))


def _value(enum) -> str:
    return str(getattr(enum, "value", enum))


def parse_summary(doc) -> FetchedMaterial:
    """A summary document (as mp-api returns it) → ``FetchedMaterial``.

    Raises
    ------
    MalformedDocumentError
        Naming the material and the field that cannot be used.
    """
    try:
        mp_id = normalize_mp_id(doc.material_id)
    except (AttributeError, ValueError) as error:
        raise MalformedDocumentError(f"summary document without a usable material_id: {error}") from None

    def bad(reason: str):
        return MalformedDocumentError(f"summary document of {mp_id}: {reason}")

    structure = getattr(doc, "structure", None)
    if structure is None or not hasattr(structure, "as_dict"):
        raise bad("no structure")
    symmetry = getattr(doc, "symmetry", None)
    number = getattr(symmetry, "number", None)
    if not isinstance(number, int) or not 1 <= number <= 230:
        raise bad(f"space group number {number!r} is not in 1-230")
    elements = sorted({_symbol(e) for e in (getattr(doc, "elements", None) or [])})
    formula = getattr(doc, "formula_pretty", None) or structure.composition.reduced_formula
    try:
        parsed = parse_formula(formula)
    except ValueError as error:
        raise bad(str(error)) from None
    if not elements or set(elements) != set(parsed.elements):
        raise bad(f"elements {elements} do not match formula {formula}")
    icsd_ids = []
    for value in (getattr(doc, "database_IDs", None) or {}).get("icsd") or []:
        try:
            icsd_ids.append(parse_icsd_id(value))
        except ValueError as error:
            raise bad(f"database_IDs: {error}") from None
    return FetchedMaterial(
        mp_id=mp_id,
        formula=parsed.reduced_formula,
        elements=elements,
        nsites=int(getattr(doc, "nsites", None) or len(structure)),
        structure=json.loads(json.dumps(structure.as_dict())),  # plain JSON types, as stored
        space_group_number=number,
        icsd_ids=icsd_ids,
        deprecated=bool(getattr(doc, "deprecated", False)),
    )


def parse_xas(doc, db_version: str) -> tuple[str, FetchedSpectrum] | None:
    """An XAS document → (mp-id, spectrum), or None if it is not a K-edge XANES.

    Raises
    ------
    MalformedDocumentError
        Naming the material, the element and what is wrong with the spectrum.
    """
    try:
        mp_id = normalize_mp_id(doc.task_id)
    except (AttributeError, ValueError) as error:
        raise MalformedDocumentError(f"XAS document without a usable task_id: {error}") from None
    element = _symbol(getattr(doc, "absorbing_element", None) or "")
    if _value(getattr(doc, "edge", "")) != "K" or _value(getattr(doc, "spectrum_type", "")) != "XANES":
        return None

    def bad(reason: str):
        return MalformedDocumentError(f"XAS document of {mp_id} ({element or '?'} K-edge): {reason}")

    if not element:
        raise bad("no absorbing element")
    spectrum = getattr(doc, "spectrum", None)
    if spectrum is None:
        raise bad("no spectrum")
    try:
        energies = np.asarray(spectrum.x, dtype=float)
        mu = np.asarray(spectrum.y, dtype=float)
    except (AttributeError, TypeError, ValueError) as error:
        raise bad(f"spectrum is not numeric ({error})") from None
    if energies.ndim != 1 or energies.shape != mu.shape:
        raise bad(f"{energies.size} energies but {mu.size} intensities")
    if energies.size < MIN_POINTS:
        raise bad(f"only {energies.size} points; at least {MIN_POINTS} are needed")
    if not (np.isfinite(energies).all() and np.isfinite(mu).all()):
        raise bad("NaN or infinite values")
    if (np.diff(energies) <= 0).any():
        raise bad("energies are not strictly increasing")
    last_updated = getattr(doc, "last_updated", None)
    return mp_id, FetchedSpectrum(
        element=element,
        energies_ev=energies.tolist(),
        mu=mu.tolist(),
        settings={
            "database": "Materials Project",
            "db_version": db_version,
            "task_id": mp_id,
            "spectrum_type": "XANES",
            "element_spectrum": "site-weighted over inequivalent absorbing sites (MP XAS collection)",
            "absorbing_index": getattr(spectrum, "absorbing_index", None),
            "last_updated": last_updated.isoformat() if hasattr(last_updated, "isoformat") else last_updated,
        },
    )


def _first_validation_error(error) -> str:
    try:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    except Exception:  # a ValidationError we cannot take apart: fall back on its text
        return str(error).splitlines()[0]


# --- The run -----------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What a run did. ``excluded`` and ``not_found`` say why a material was not stored."""

    db_version: str = ""
    requested: int = 0
    already_stored: int = 0
    processed: int = 0
    materials_created: int = 0
    materials_updated: int = 0
    materials_stored: int = 0
    spectra_created: int = 0
    excluded: dict[str, str] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    http: HTTPStats = field(default_factory=HTTPStats)

    def as_dict(self) -> dict:
        values = {key: value for key, value in self.__dict__.items() if key != "http"}
        return {**values, "http": self.http.as_dict()}

    def line(self) -> str:
        return (
            f"{self.requested} requested, {self.already_stored} already stored, {self.processed} fetched: "
            f"{self.materials_stored} stored ({self.materials_created} new, {self.materials_updated} updated), "
            f"{self.spectra_created} spectra; {len(self.excluded)} excluded, {len(self.not_found)} not found"
        )


class MPIngestion:
    """One ingestion run. ``report`` holds its counts, also after an interruption.

    Parameters
    ----------
    config
        Where and how fast to ask; ``IngestConfig.from_settings()`` when None.
    progress
        ``callable(stage, done, total)``, called after each material is handled (its
        transaction committed); ``materials.progress.StageProgress`` draws a bar.
    icsd_metadata
        ``{icsd_id: metadata}`` (``materials.icsd_quality.read_icsd_metadata``). A
        material with metadata for some of its ICSD ids is kept only if one of them
        passes the quality filter; one with none is not filtered.
    session
        A requests session to use instead of ``make_session(config)``.
    """

    def __init__(
        self,
        config: IngestConfig | None = None,
        *,
        progress: Progress | None = None,
        icsd_metadata: Mapping[int, Mapping] | None = None,
        session: requests.Session | None = None,
    ):
        self.config = config or IngestConfig.from_settings()
        self.progress = progress
        self.icsd_metadata = icsd_metadata
        self.report = IngestReport()
        self._session = session
        self._owns_session = False
        self._rester = None

    # -- public ----------------------------------------------------------------

    def run(self, mp_ids: Sequence[str], limit: int | None = None) -> IngestReport:
        """Ingest ``mp_ids`` (duplicates and stored materials skipped, at most ``limit``
        fetched).

        Raises
        ------
        ValueError
            If an id is not an mp-id.
        MPIngestError
            If the API keeps failing or sends a malformed document; what was stored
            before stays stored.
        """
        ids = list(dict.fromkeys(normalize_mp_id(value) for value in mp_ids))
        stored = complete_mp_ids(ids)
        pending = [mp_id for mp_id in ids if mp_id not in stored]
        if limit is not None:
            pending = pending[: max(limit, 0)]
        report = self.report
        report.requested, report.already_stored = len(ids), len(stored)
        self._tick(0, len(pending))
        if not pending:
            return report
        try:
            self._connect()
            for start in range(0, len(pending), self.config.chunk_size):
                chunk = pending[start : start + self.config.chunk_size]
                fetched = self._fetch(chunk)
                for mp_id in chunk:
                    self._handle(mp_id, fetched.get(mp_id))
                    report.processed += 1
                    self._tick(report.processed, len(pending))
        finally:
            if self._owns_session:
                self._session.close()
        return report

    # -- steps -------------------------------------------------------------------

    def _tick(self, done: int, total: int) -> None:
        if self.progress:
            self.progress("materials", done, total)

    def _connect(self) -> None:
        """Read the release from ``/heartbeat`` and build the MPRester, with retries."""
        from mp_api.client import MPRester
        from mp_api.client.core.client import MPRestError

        if self._session is None:
            self._owns_session = True
            self._session = make_session(self.config, self.report.http)
        url = self.config.endpoint + "heartbeat"
        try:
            # Our own call, through the throttled and retrying session: MPRester caches
            # the release per process, and a long-lived worker must see a new one.
            response = self._session.get(url, timeout=self.config.timeout_seconds)
        except RetriesExhausted as error:
            raise MPRequestError(f"{self.config.endpoint}: {error}") from None
        except requests.RequestException as error:
            raise MPRequestError(f"cannot reach the Materials Project API at {self.config.endpoint}: {error}") from None
        if response.status_code != 200:
            raise MPRequestError(f"{url} answered HTTP {response.status_code} after every retry")
        try:
            self.report.db_version = str(response.json()["db_version"])
        except (ValueError, KeyError, TypeError):
            raise MPRequestError(f"{url} did not report a db_version; is this the Materials Project API?") from None

        for attempt in range(self.config.max_retries + 1):
            try:
                self._rester = MPRester(
                    api_key=self.config.api_key,
                    endpoint=self.config.endpoint,
                    session=self._session,
                    mute_progress_bars=True,
                    use_document_model=True,
                )
                return
            except (requests.RequestException, ValueError, KeyError, MPRestError) as error:
                # Its heartbeat calls bypass our session; a 429 or 5xx there surfaces
                # as a missing key, an error message or a body that is not JSON.
                if attempt == self.config.max_retries:
                    raise MPRequestError(f"cannot open MPRester on {self.config.endpoint}: {error!r}") from None
                time.sleep(retry_delay(attempt, self.config))

    def _fetch(self, chunk: list[str]) -> dict[str, FetchedMaterial]:
        """Both requests for a chunk, every document checked; nothing written."""
        from mp_api.client.core.client import MPRestError
        from pydantic import ValidationError

        what = f"{chunk[0]}…{chunk[-1]} ({len(chunk)} materials)" if len(chunk) > 1 else chunk[0]
        try:
            summaries = self._rester.materials.summary.search(
                material_ids=chunk, fields=SUMMARY_FIELDS, chunk_size=PAGE_SIZE
            )
            xas = self._rester.materials.xas.search(
                task_ids=chunk, edge="K", spectrum_type="XANES", fields=XAS_FIELDS, chunk_size=PAGE_SIZE
            )
        except ValidationError as error:
            raise MalformedDocumentError(
                f"the API sent a document for {what} that does not validate: {_first_validation_error(error)}; "
                "nothing of this chunk was stored"
            ) from None
        except MPRestError as error:
            raise MPRequestError(f"request for {what} failed after every retry: {error}") from None
        except ValueError as error:  # orjson's JSONDecodeError: the body was not JSON
            raise MalformedDocumentError(
                f"the API answered the request for {what} with something that is not JSON ({error}); "
                "nothing of this chunk was stored"
            ) from None
        wanted = set(chunk)
        materials: dict[str, FetchedMaterial] = {}
        for doc in summaries:
            material = parse_summary(doc)
            if material.mp_id in wanted:
                materials[material.mp_id] = material
        spectra: dict[str, dict[str, tuple]] = {}
        for doc in xas:
            parsed = parse_xas(doc, self.report.db_version)
            if parsed is None or parsed[0] not in wanted:
                continue
            mp_id, spectrum = parsed
            # Two documents for one element: keep the newer, deterministically.
            key = (str(spectrum.settings.get("last_updated") or ""), spectrum.energies_ev[0])
            current = spectra.setdefault(mp_id, {}).get(spectrum.element)
            if current is None or key > current[0]:
                spectra[mp_id][spectrum.element] = (key, spectrum)
        for mp_id, material in materials.items():
            material.spectra = {element: item[1] for element, item in sorted(spectra.get(mp_id, {}).items())}
        return materials

    def _handle(self, mp_id: str, material: FetchedMaterial | None) -> None:
        report = self.report
        if material is None:
            report.not_found.append(mp_id)
            return
        reason = self._exclusion(material)
        if reason:
            report.excluded[mp_id] = reason
            return
        created, updated, spectra = store_material(material, f"Materials Project {report.db_version}")
        report.materials_stored += 1
        report.materials_created += created
        report.materials_updated += updated
        report.spectra_created += spectra

    def _exclusion(self, material: FetchedMaterial) -> str:
        """Why a fetched material is not kept, or ""."""
        if material.deprecated:
            return "deprecated in the Materials Project"
        missing = [element for element in material.elements if element not in material.spectra]
        if missing:
            return f"no K-edge XANES for {', '.join(missing)} (a spectrum for every element is required)"
        existing = Material.objects.filter(mp_id=material.mp_id).values_list("elements", "reduced_formula").first()
        if existing and existing[0] and set(existing[0]) != set(material.elements):
            return f"MP's formula {material.formula} differs from the stored {existing[1]}"
        if self.icsd_metadata:
            return self._quality_exclusion(material)
        return ""

    def _quality_exclusion(self, material: FetchedMaterial) -> str:
        from materials.icsd_quality import check_quality

        stored = Material.objects.filter(mp_id=material.mp_id).values_list("icsd_ids", flat=True).first() or []
        ids = list(dict.fromkeys([*material.icsd_ids, *stored]))
        verdicts = {i: check_quality(self.icsd_metadata[i]) for i in ids if i in self.icsd_metadata}
        if not verdicts or any(verdict.passed for verdict in verdicts.values()):
            return ""
        first, verdict = next(iter(verdicts.items()))
        return f"ICSD quality filter: no ICSD entry passes (icsd {first}: {verdict.reason})"


def store_material(material: FetchedMaterial, release: str) -> tuple[int, int, int]:
    """Write one material and its spectra in one transaction; idempotent.

    A stored material keeps its identity, formula and catalogue provenance; MP fills
    what it lacks (structure, symmetry) and adds ICSD ids. Returns (created,
    updated, spectra created) as 0/1, 0/1, count.
    """
    symmetry = symmetry_of(material.space_group_number)
    with transaction.atomic():
        row = Material.objects.select_for_update().filter(mp_id=material.mp_id).first()
        created = row is None
        if created:
            row = Material(
                mp_id=material.mp_id,
                icsd_ids=material.icsd_ids,
                formula=material.formula,
                reduced_formula=material.formula,
                elements=material.elements,
                nsites=material.nsites,
                structure=material.structure,
                structure_source=Material.Source.MATERIALS_PROJECT,
                space_group_number=symmetry.number,
                space_group_symbol=symmetry.symbol,
                point_group=symmetry.point_group,
                crystal_system=symmetry.crystal_system,
                source=Material.Source.MATERIALS_PROJECT,
                source_release=release,
            )
            try:
                with transaction.atomic():  # a savepoint: another worker may create it first
                    row.save()
            except IntegrityError:
                row, created = Material.objects.select_for_update().get(mp_id=material.mp_id), False
        updated = False if created else _fill(row, material, symmetry)
        have = set(
            Spectrum.objects.filter(material=row, source=Spectrum.Source.MATERIALS_PROJECT, edge="K").values_list(
                "element", flat=True
            )
        )
        new = [
            Spectrum(
                material=row,
                element=spectrum.element,
                edge="K",
                energies_ev=spectrum.energies_ev,
                mu=spectrum.mu,
                source=Spectrum.Source.MATERIALS_PROJECT,
                settings=spectrum.settings,
                source_release=release,
            )
            for element, spectrum in material.spectra.items()
            if element not in have and element in material.elements
        ]
        # ignore_conflicts: a concurrent run that stored the same spectrum wins, quietly.
        Spectrum.objects.bulk_create(new, ignore_conflicts=True)
        Material.objects.filter(pk=row.pk).refresh_has_spectra()
    return int(created), int(updated), len(new)


def _fill(row: Material, material: FetchedMaterial, symmetry) -> bool:
    """Give a stored material what MP knows and it lacks; True if anything changed."""
    changed = []
    icsd_ids = list(dict.fromkeys([*(row.icsd_ids or []), *material.icsd_ids]))
    if icsd_ids != (row.icsd_ids or []):
        row.icsd_ids = icsd_ids
        changed.append("icsd_ids")
    # A structure from another source stays: spectra computed from it must match it.
    replaceable = not row.structure or row.structure_source == Material.Source.MATERIALS_PROJECT
    if replaceable and row.structure != material.structure:
        row.structure, row.structure_source, row.nsites = (
            material.structure,
            Material.Source.MATERIALS_PROJECT,
            material.nsites,
        )
        changed += ["structure", "structure_source", "nsites"]
    if row.space_group_number is None:
        row.space_group_number, row.space_group_symbol = symmetry.number, symmetry.symbol
        row.point_group, row.crystal_system = symmetry.point_group, symmetry.crystal_system
        changed += ["space_group_number", "space_group_symbol", "point_group", "crystal_system"]
    if changed:
        row.save(update_fields=changed)
    return bool(changed)


def ingest_mp_ids(mp_ids: Sequence[str], **kwargs) -> IngestReport:
    """``MPIngestion(**kwargs).run(mp_ids)``; ``limit`` goes to ``run``."""
    limit = kwargs.pop("limit", None)
    return MPIngestion(**kwargs).run(mp_ids, limit=limit)


def run_job(job) -> dict:
    """Run the ingestion a ``Job(kind=INGEST_MP)`` describes and return its report.

    ``job.parameters``: ``mp_ids`` (list), optional ``limit``, ``options`` (the
    ``IngestConfig`` tunables) and ``icsd_metadata`` (a CSV path the worker can read).
    The API key and endpoint come from the worker's settings.
    """
    from materials.icsd_quality import read_icsd_metadata

    parameters = job.parameters or {}
    metadata = None
    if parameters.get("icsd_metadata"):
        metadata, rejected = read_icsd_metadata(Path(parameters["icsd_metadata"]))
        for rejection in rejected:
            logger.warning("ICSD metadata row skipped: %s", rejection)
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 1.0:  # at most one UPDATE a second
            last[0] = now
            job.report_progress(done / total if total else 1.0, f"{done}/{total} materials")

    ingestion = MPIngestion(
        IngestConfig.from_settings(**(parameters.get("options") or {})), progress=progress, icsd_metadata=metadata
    )
    return ingestion.run(parameters.get("mp_ids") or [], limit=parameters.get("limit")).as_dict()


def parse_id_lines(text: str) -> tuple[list[str], list[int], list[str]]:
    """Split a file of ids, one per line (``#`` comments), into mp-ids and ICSD ids.

    Returns
    -------
    tuple
        (mp-ids, ICSD ids, problems as ``line N: reason``).
    """
    mp_ids, icsd_ids, problems = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip().strip(",")
        if not value:
            continue
        try:
            if value.lower().startswith(("mp-", "mvc-")):
                mp_ids.append(normalize_mp_id(value))
            else:
                icsd_ids.append(parse_icsd_id(value))
        except ValueError as error:
            problems.append(f"line {number}: {error}")
    return mp_ids, icsd_ids, problems
