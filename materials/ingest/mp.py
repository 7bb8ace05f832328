"""Ingesting Materials Project K-edge XANES with the official ``mp-api`` client.

For each material (an mp-id, or an ICSD id mapped to one) this fetches the summary
document (structure, symmetry, ICSD ids) and the K-edge XANES of every element from
MP's XAS endpoint (element spectra, site-weighted over inequivalent sites), and keeps
the material only if every element has a spectrum: the paper's rule for a usable
sample. Where ICSD metadata is supplied, the paper's ICSD quality filter
(``materials.ingest.icsd_quality``) applies too.

The steps live next door: ``mp_http`` (configuration, throttle, retries), ``mp_documents``
(reading ids and documents) and ``mp_store`` (what is stored, storing). ``manage.py
ingest_mp`` and the ``materials.ingest_mp`` task run ``MPIngestion`` (the task through
``run_job``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from materials.ingest.mp_documents import (
    SUMMARY_FIELDS,
    XAS_FIELDS,
    FetchedMaterial,
    MalformedDocumentError,
    first_validation_error,
    normalize_mp_id,
    parse_summary,
    parse_xas,
)
from materials.ingest.mp_http import (
    PAGE_SIZE,
    HTTPStats,
    IngestConfig,
    MPRequestError,
    RetriesExhausted,
    make_session,
    retry_delay,
)
from materials.ingest.mp_store import complete_mp_ids, store_material
from materials.models import Material

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


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
        ``{icsd_id: metadata}`` (``materials.ingest.icsd_quality.read_icsd_metadata``). A
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
                f"the API sent a document for {what} that does not validate: {first_validation_error(error)}; "
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
        from materials.ingest.icsd_quality import check_quality

        stored = Material.objects.filter(mp_id=material.mp_id).values_list("icsd_ids", flat=True).first() or []
        ids = list(dict.fromkeys([*material.icsd_ids, *stored]))
        verdicts = {i: check_quality(self.icsd_metadata[i]) for i in ids if i in self.icsd_metadata}
        if not verdicts or any(verdict.passed for verdict in verdicts.values()):
            return ""
        first, verdict = next(iter(verdicts.items()))
        return f"ICSD quality filter: no ICSD entry passes (icsd {first}: {verdict.reason})"


def run_job(job) -> dict:
    """Run the ingestion a ``Job(kind=INGEST_MP)`` describes and return its report.

    ``job.parameters``: ``mp_ids`` (list), optional ``limit``, ``options`` (the
    ``IngestConfig`` tunables) and ``icsd_metadata`` (a CSV path the worker can read).
    The API key and endpoint come from the worker's settings.
    """
    from materials.ingest.icsd_quality import read_icsd_metadata

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
