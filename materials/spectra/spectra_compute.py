"""Computing missing spectra of stored materials with FEFF (the Django side of
``materials/spectra/feff.py``).

``compute_job_spectrum`` is what a ``feff`` task runs: a scratch directory and
progress around ``compute_material_spectra``, which computes one element's K edge of
one material and stores it as a ``Spectrum`` in one transaction, so a failure
anywhere leaves no row behind, and skips an element that already has a FEFF
spectrum, so a re-delivered task does no work twice. ``missing_spectra`` and
``materials_lacking_spectra`` choose what ``manage.py compute_spectra`` enqueues.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from materials.models import Job, Material, Spectrum, elements_key
from materials.spectra import feff
from materials.spectra.feff import FeffError

#: Seconds FEFF may take for one (material, element), every inequivalent site included.
#: The ``mp`` preset took 53 min for the single Co site of LiCoO2 on the 2-core
#: development machine under a load average of 7; ``fast`` takes seconds to minutes per site.
FEFF_BUDGET_S = 6000
#: The ``feff`` task's Celery limits: soft, then hard, which stays below the broker's
#: visibility timeout (7200 s), so a running task is not re-delivered.
SOFT_TIME_LIMIT_S = FEFF_BUDGET_S + 120
TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 120


def scratch_root() -> Path:
    """Where FEFF scratch directories go: ``settings.FEFF_SCRATCH_DIR`` or ``<tmp>/screening-feff``."""
    root = Path(settings.FEFF_SCRATCH_DIR or Path(tempfile.gettempdir()) / "screening-feff")
    root.mkdir(parents=True, exist_ok=True)
    return root


def remove_stale_scratch(root: Path, older_than_s: float = TIME_LIMIT_S * 2) -> int:
    """Remove scratch directories a hard-killed task left; no live task is that old."""
    removed, now = 0, time.time()
    for path in root.glob("feff-*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue  # another worker removed it first
    return removed


@dataclass
class ComputeOutcome:
    """What ``compute_material_spectra`` did: the spectrum, and whether it was new."""

    spectrum: Spectrum
    created: bool

    def as_result(self) -> dict:
        """A JSON summary for ``Job.result``."""
        settings = self.spectrum.settings or {}
        return {
            "spectrum_id": self.spectrum.pk,
            "created": self.created,
            "preset": settings.get("preset"),
            "sites_computed": len(settings.get("sites") or []),
            "feff_seconds": settings.get("seconds"),
        }


def source_release(preset: str) -> str:
    """``Spectrum.source_release`` of a spectrum computed here."""
    return f"computed in-app: FEFF10 (feff10-rs {feff.library_versions()['feff10-rs']}), preset {preset}"


def compute_material_spectra(
    material_id: int,
    element: str,
    preset: str = "fast",
    *,
    work_dir: Path | str | None = None,
    timeout_s: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ComputeOutcome:
    """Compute and store the K-edge XANES of ``element`` in material ``material_id``.

    Parameters
    ----------
    material_id : int
        A ``Material`` with a structure.
    element : str
        The absorbing element.
    preset : {"fast", "mp"}
        FEFF settings (``materials.spectra.feff.PRESETS``).
    work_dir : path, optional
        Scratch folder for FEFF, owned by the caller.
    timeout_s : float, optional
        Budget for the FEFF runs, in seconds.
    progress : callable, optional
        ``progress(sites_done, sites_total, message)``.

    Returns
    -------
    ComputeOutcome
        The stored spectrum; ``created`` is false when a FEFF spectrum of this
        element already existed (nothing was computed).

    Raises
    ------
    FeffError
        When the material has no structure, or the structure or element cannot be
        computed (partial occupancy, too many sites, no K-edge data, ...).
    Material.DoesNotExist
        For an unknown id.
    """
    material = Material.objects.get(pk=material_id)
    existing = Spectrum.objects.filter(
        material=material, element=element, edge=feff.EDGE, source=Spectrum.Source.FEFF
    ).first()
    if existing is not None:
        return ComputeOutcome(existing, created=False)
    # sites="all": a computed spectrum is the multiplicity-weighted site average, as MP's are.
    result = feff.compute_k_edge_xanes(
        structure_of(material), element, preset, sites="all", work_dir=work_dir, timeout_s=timeout_s, progress=progress
    )
    return store_result(material, result, preset)


def compute_job_spectrum(job: Job) -> dict:
    """Run one ``compute_spectra`` job (``job.parameters``: ``material_id``, ``element``,
    optional ``preset``) in a scratch directory of its own, with FEFF's budget and the job's
    progress kept current; returns the JSON result for ``Job.result``."""
    parameters, root = job.parameters, scratch_root()
    remove_stale_scratch(root)

    def progress(done: int, total: int, message: str) -> None:
        job.report_progress(done / max(total, 1), message)

    with tempfile.TemporaryDirectory(prefix="feff-", dir=root) as scratch:
        outcome = compute_material_spectra(
            parameters["material_id"],
            parameters["element"],
            parameters.get("preset", "fast"),
            work_dir=scratch,
            timeout_s=FEFF_BUDGET_S,
            progress=progress,
        )
    return outcome.as_result()


def structure_of(material: Material):
    """The structure FEFF needs, or a ``FeffError`` saying it is missing."""
    structure = material.get_structure()
    if structure is None:
        raise FeffError(f"material {material} has no structure; only its composition is known")
    return structure


def store_result(material: Material, result: feff.XanesResult, preset: str) -> ComputeOutcome:
    """Store a computed K-edge spectrum in one transaction (a duplicate that finished first wins)."""
    with transaction.atomic():
        spectrum, created = Spectrum.objects.get_or_create(
            material=material,
            element=result.element,
            edge=result.edge,
            source=Spectrum.Source.FEFF,
            defaults={
                "energies_ev": result.energies_ev,
                "mu": result.mu,
                "settings": result.provenance(),
                "source_release": source_release(preset),
            },
        )
        Material.objects.filter(pk=material.pk).refresh_has_spectra()
    return ComputeOutcome(spectrum, created)


def materials_lacking_spectra(ids: Iterable[int] | None = None, elements: Iterable[str] | None = None):
    """Materials with a structure that lack a spectrum (of any source) of some element.

    Parameters
    ----------
    ids : iterable of int, optional
        Only these materials.
    elements : iterable of str, optional
        Only materials containing at least one of these elements.

    Returns
    -------
    QuerySet
        Ordered by size (``nsites``, then id): the cheapest computations first.
        ``has_spectra`` is false exactly when an element lacks a spectrum, so this
        is one indexed filter; ``missing_spectra`` names the elements.
    """
    materials = Material.objects.filter(structure__isnull=False, has_spectra=False)
    if ids is not None:
        materials = materials.filter(pk__in=list(ids))
    wanted = sorted(set(elements or []))
    if wanted:
        query = None
        for element in wanted:
            clause = Material.objects.filter(elements_key__contains=elements_key([element]))
            query = clause if query is None else query | clause
        materials = materials.filter(pk__in=query.values("pk"))
    return materials.order_by("nsites", "id")


def missing_spectra(materials, elements: Iterable[str] | None = None) -> list[tuple[int, str]]:
    """``(material_id, element)`` pairs without a spectrum, in the materials' order.

    Parameters
    ----------
    materials : iterable of Material
        Typically ``materials_lacking_spectra(...)``.
    elements : iterable of str, optional
        Only these absorbing elements.
    """
    materials = list(materials)
    wanted = set(elements or [])
    have: dict[int, set[str]] = {}
    for material_id, element in Spectrum.objects.filter(
        material_id__in=[m.pk for m in materials], edge=feff.EDGE
    ).values_list("material_id", "element"):
        have.setdefault(material_id, set()).add(element)
    pairs = []
    for material in materials:
        for element in sorted(material.elements):
            if element not in have.get(material.pk, set()) and (not wanted or element in wanted):
                pairs.append((material.pk, element))
    return pairs


def plan_missing_spectra(
    ids: Iterable[int] | None = None,
    elements: Iterable[str] | None = None,
    limit: int | None = None,
    chunk_size: int = 500,
) -> list[tuple[int, str]]:
    """The ``(material_id, element)`` pairs to compute for up to ``limit`` materials.

    A material counts toward ``limit`` only when it has something to compute (with
    an element filter, a material may lack spectra of other elements only).
    """
    elements = list(elements or [])
    materials = materials_lacking_spectra(ids, elements)
    pairs: list[tuple[int, str]] = []
    n_materials, offset = 0, 0
    while limit is None or n_materials < limit:
        chunk = list(materials.only("id", "elements")[offset : offset + chunk_size])
        if not chunk:
            break
        offset += len(chunk)
        by_material: dict[int, list[tuple[int, str]]] = {}
        for material_id, element in missing_spectra(chunk, elements):
            by_material.setdefault(material_id, []).append((material_id, element))
        for material in chunk:
            if material.pk in by_material and (limit is None or n_materials < limit):
                pairs.extend(by_material[material.pk])
                n_materials += 1
    return pairs
