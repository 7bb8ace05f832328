"""Reading the Materials Project's documents: mp-ids and ICSD ids, summary documents
(structure, symmetry, ICSD ids) and XAS documents (K-edge XANES), checked before anything
is stored. No database access here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from materials.chemistry import parse_formula
from materials.ingest.mp_http import MPIngestError
from mlcore.spectrum import SpectrumError, validate_spectrum

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


class MalformedDocumentError(MPIngestError):
    """The API sent a document we cannot read; nothing of its chunk was stored."""


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
    try:  # the one rule of a valid spectrum, as for every other source
        energies, mu = validate_spectrum(element, energies, mu)
    except SpectrumError as error:
        raise bad(error.problem) from None
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


def first_validation_error(error) -> str:
    try:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    except Exception:  # a ValidationError we cannot take apart: fall back on its text
        return str(error).splitlines()[0]
