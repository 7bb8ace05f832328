"""Storing what the Materials Project sent, and what is stored already.

A chunk's documents are all fetched and checked before any is written: a
malformed document stops the run with an error naming it, and nothing of its
chunk is stored. Each material is then written in its own transaction (material,
spectra, ``has_spectra``), so an interruption (an error, Ctrl-C, kill -9) loses
at most the material being written. Materials that already have an MP spectrum
for every element are skipped before any request, so a re-run resumes where the
last one stopped; the unique constraints on ``Material.mp_id`` and on
(material, element, edge, source) keep concurrent runs from storing anything
twice.

``Spectrum.source_release`` and, for materials this creates,
``Material.source_release`` are ``"Materials Project <db_version>"``, the release
the API reported; the material keeps its mp-id and gains the ICSD ids MP lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from materials.ingest.mp_documents import FetchedMaterial
from materials.models import Material, Spectrum


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


# --- Writing ------------------------------------------------------------------------------


def store_material(material: FetchedMaterial, release: str) -> tuple[int, int, int]:
    """Write one material and its spectra in one transaction; idempotent.

    A stored material keeps its identity, formula and catalogue provenance; MP fills
    what it lacks (structure, symmetry) and adds ICSD ids. Returns (created,
    updated, spectra created) as 0/1, 0/1, count.
    """
    with transaction.atomic():
        row = Material.objects.select_for_update().filter(mp_id=material.mp_id).first()
        created = row is None
        if created:
            row = Material.new(
                material.space_group_number,
                mp_id=material.mp_id,
                icsd_ids=material.icsd_ids,
                formula=material.formula,
                reduced_formula=material.formula,
                elements=material.elements,
                nsites=material.nsites,
                structure=material.structure,
                structure_source=Material.Source.MATERIALS_PROJECT,
                source=Material.Source.MATERIALS_PROJECT,
                source_release=release,
            )
            try:
                with transaction.atomic():  # a savepoint: another worker may create it first
                    row.save()
            except IntegrityError:
                row, created = Material.objects.select_for_update().get(mp_id=material.mp_id), False
        updated = False if created else _fill(row, material)
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


def _fill(row: Material, material: FetchedMaterial) -> bool:
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
        changed += row.set_symmetry(material.space_group_number)
    if changed:
        row.save(update_fields=changed)
    return bool(changed)
