"""What a submitted material to classify may be: the one set of rules for ``POST /api/classify/``
and ``manage.py classify``, with field-level messages.

Two ways in, one check:

* :func:`read_request` takes the API's JSON request body (``{"spectra": {"Co": {"energies_ev":
  [...], "mu": [...]}}, "formula": ..., "space_group": ..., "structure": ..., "sort_energies":
  ...}``), checks its types and hands the values to
* :func:`check_submission`, which takes already-read values (spectra from JSON, or from files
  read by :func:`spectra_from_files`; a formula; a space group; a structure, from JSON or read
  by :func:`read_structure_upload`) and returns a :class:`Submission`: each spectrum
  checked by ``mlcore.spectrum.validate_spectrum`` (the one "valid spectrum" rule), the
  composition and space group taken from the formula, the structure or the payload.

Bad input raises :class:`ClassifyInputError`, whose ``errors`` map each field to its
messages (``{"spectra": {"Co": {"mu": ["mu[7] is NaN ..."]}}}``): the API answers them as a
400 body, the command as one line per field.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from materials.ingest.spectrum_files import SpectrumFileError, read_spectrum_file
from materials.ingest.structure_files import (
    StructureFileError,
    decode_structure,
    read_structure,
    space_group_number,
    structure_format,
)
from mlcore.elements import ABSORBING_ELEMENTS, ELEMENTS
from mlcore.spectrum import SpectrumError, validate_spectrum

MAX_POINTS = 20_000
MAX_SPECTRA = 20
MAX_STRUCTURE_SITES = 500
TRUE_WORDS = frozenset({"t", "y", "yes", "true", "on", "1"})
FALSE_WORDS = frozenset({"f", "n", "no", "false", "off", "0"})
SORT_HINT = " (set sort_energies to sort digitised data first)"


class ClassifyInputError(ValueError):
    """Input that cannot be classified; ``errors`` maps fields to messages (nested for spectra)."""

    def __init__(self, errors: dict) -> None:
        self.errors = errors
        super().__init__("; ".join(error_lines(errors)))


def error_lines(errors, prefix: str = "") -> list[str]:
    """Nested field errors as ``field.sub: message`` lines."""
    if isinstance(errors, dict):
        return [line for key, value in errors.items() for line in error_lines(value, f"{prefix}{key}.")]
    if isinstance(errors, (list, tuple)):
        return [line for item in errors for line in error_lines(item, prefix)]
    name = prefix.rstrip(".")
    return [f"{name}: {errors}" if name and name != "non_field_errors" else str(errors)]


@dataclass
class Submission:
    """A checked material to classify: spectra as float64 arrays by element, sorted when asked."""

    spectra: dict[str, tuple[np.ndarray, np.ndarray]]
    composition: dict[str, float]
    composition_source: str  # formula, structure or spectra
    space_group: int | None
    space_group_source: str | None  # payload, structure or None
    warnings: list[str] = field(default_factory=list)


# --- The JSON request body ------------------------------------------------------------------


def read_request(payload) -> Submission:
    """The API's JSON request body, checked: types first (every field), then :func:`check_submission`."""
    if not isinstance(payload, Mapping):
        raise ClassifyInputError({"non_field_errors": ["expected a JSON object with a 'spectra' field"]})
    errors: dict = {}
    spectra = _read_spectra(payload.get("spectra"), "spectra" in payload, errors)
    space_group = _read_integer(payload.get("space_group"), "space_group", errors)
    formula = _read_text(payload.get("formula"), "formula", errors)
    sort = _read_boolean(payload.get("sort_energies", False), "sort_energies", errors)
    if errors:
        raise ClassifyInputError(errors)
    return check_submission(
        spectra, formula=formula, space_group=space_group, structure=payload.get("structure"), sort_energies=sort
    )


def _read_spectra(value, given: bool, errors: dict) -> dict:
    if not given:
        errors["spectra"] = ["This field is required."]
        return {}
    if not isinstance(value, Mapping):
        errors["spectra"] = [f'Expected a dictionary of items but got type "{type(value).__name__}".']
        return {}
    spectra, problems = {}, {}
    for element, spectrum in value.items():
        if not isinstance(spectrum, Mapping):
            problems[element] = {"non_field_errors": [f"Expected a dictionary, but got {type(spectrum).__name__}."]}
            continue
        missing = {name: ["This field is required."] for name in ("energies_ev", "mu") if name not in spectrum}
        if missing:
            problems[element] = missing
            continue
        spectra[element] = (spectrum["energies_ev"], spectrum["mu"])
    if problems:
        errors["spectra"] = problems
    return spectra


def _read_integer(value, name: str, errors: dict) -> int | None:
    if value is None or value == "":
        return None
    integral = isinstance(value, float) and value.is_integer()
    digits = isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 20
    if (isinstance(value, int) and not isinstance(value, bool)) or integral or digits:
        return int(value)
    errors[name] = ["A valid integer is required."]
    return None


def _read_text(value, name: str, errors: dict) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        errors[name] = ["Not a valid string."]
        return ""
    return str(value).strip()


def _read_boolean(value, name: str, errors: dict) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    errors[name] = ["Must be a valid boolean."]
    return False


# --- Already-read values ----------------------------------------------------------------------


def check_submission(
    spectra: Mapping, *, formula: str | None = None, space_group=None, structure=None, sort_energies: bool = False
) -> Submission:
    """Check one material's inputs: ``spectra`` maps elements to ``(energies_ev, mu)`` (lists or
    arrays); ``structure`` is a pymatgen ``Structure`` or its ``as_dict()``.

    Each field is checked on its own first (all their errors are reported together), then the
    fields against each other (the formula's and the structure's elements, spectra outside the
    composition).
    """
    errors: dict = {}
    checked = _check_spectra(spectra, sort_energies, errors)
    number = _check_space_group(space_group, errors)
    parsed = _check_formula(formula, errors)
    structure = _check_structure(structure, errors)
    if errors:
        raise ClassifyInputError(errors)
    return _combine(checked, number, parsed, structure)


def _check_spectra(spectra: Mapping, sort: bool, errors: dict) -> dict:
    if not spectra:
        errors["spectra"] = ["give at least one spectrum"]
        return {}
    if len(spectra) > MAX_SPECTRA:
        errors["spectra"] = [f"at most {MAX_SPECTRA} spectra per material"]
        return {}
    problems, checked = {}, {}
    for element, (energies, mu) in spectra.items():
        if element not in ABSORBING_ELEMENTS:
            known = "H or He (no K-edge XANES in range)" if element in ("H", "He") else "not an element symbol"
            problems[element] = [f"unknown absorbing element {str(element)[:10]!r} ({known}); use Li to Pu"]
            continue
        point_errors = {}
        energies = _points(energies, "energies_ev", point_errors)
        mu = _points(mu, "mu", point_errors)
        if point_errors:
            problems[element] = point_errors
            continue
        if sort and energies.shape == mu.shape and np.isfinite(energies).all():
            order = np.argsort(energies, kind="stable")
            energies, mu = energies[order], mu[order]
        try:
            checked[element] = validate_spectrum(element, energies, mu)
        except SpectrumError as error:
            hint = SORT_HINT if error.code in ("unsorted", "duplicate") and not sort else ""
            problems[element] = {error.field or "non_field_errors": [error.problem + hint]}
    if problems:
        errors["spectra"] = problems
    return checked


def _points(values, name: str, errors: dict) -> np.ndarray | None:
    """A list of numbers as a float64 array (NaN and infinities are left for validate_spectrum)."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        errors[name] = [f"Expected a list of numbers but got {type(values).__name__}."]
        return None
    if len(values) > MAX_POINTS:
        errors[name] = [f"At most {MAX_POINTS} points are accepted; got {len(values)}."]
        return None
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = value[:40] if isinstance(value, str) else value
            errors[name] = [f"Every value must be a number; item {index} is {shown!r}."]
            return None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float range is not a finite number either
        return np.array([float(v) if abs(v) < 1e308 else math.inf for v in values], dtype=np.float64)


def _check_space_group(number, errors: dict) -> int | None:
    if number is None:
        return None
    if not 1 <= number <= 230:
        errors["space_group"] = [f"space group {number} is outside 1-230"]
        return None
    return int(number)


def _check_formula(formula: str | None, errors: dict):
    if not formula:
        return None
    from materials.chemistry import parse_formula

    if len(formula) > 200:
        errors["formula"] = ["Ensure this field has no more than 200 characters."]
        return None
    try:
        parsed = parse_formula(formula)
    except ValueError as error:
        errors["formula"] = [str(error)]
        return None
    if any(element not in ELEMENTS for element in parsed.elements):
        errors["formula"] = [f"{formula!r} has elements beyond Pu"]
        return None
    return parsed


def spectra_from_files(files, element: str | None = None) -> dict[str, tuple[list, list]]:
    """Spectra by element from ``(name, raw bytes)`` spectrum files (CSV/text or XDI, read by
    :func:`materials.ingest.spectrum_files.read_spectrum_file`); ``element`` names the absorber of
    two-column files."""
    if len(files) > MAX_SPECTRA:
        raise ClassifyInputError({"file": [f"at most {MAX_SPECTRA} files"]})
    spectra: dict[str, tuple[list, list]] = {}
    for name, raw in files:
        try:
            found = read_spectrum_file(name, raw, element)
        except SpectrumFileError as error:
            raise ClassifyInputError({"file": [f"{name}: {error}"]}) from None
        for symbol, points in found.items():
            if symbol in spectra:
                raise ClassifyInputError({"file": [f"{name}: a second {symbol} spectrum"]})
            spectra[symbol] = points
    return spectra


def read_structure_upload(name: str, raw: bytes):
    """A structure file (CIF, or POSCAR by its name) given with spectra, as a pymatgen Structure."""
    try:
        return read_structure(decode_structure(raw), structure_format(name), primitive=True)
    except StructureFileError as error:
        raise ClassifyInputError({"structure": [f"cannot read {name}: {error.reason}"]}) from None


def _check_structure(value, errors: dict):
    from pymatgen.core import Structure

    if value is None or (isinstance(value, (str, dict)) and not value):
        return None
    if isinstance(value, Structure):
        structure = value.copy()
    elif isinstance(value, dict):
        sites = value.get("sites")
        if not isinstance(sites, list) or not sites:
            errors["structure"] = ["a pymatgen Structure dict needs a non-empty 'sites' list"]
            return None
        if len(sites) > MAX_STRUCTURE_SITES:
            errors["structure"] = [f"{len(sites)} sites; at most {MAX_STRUCTURE_SITES} are accepted"]
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                structure = Structure.from_dict(value)
            except Exception as error:  # pymatgen raises many types for malformed dicts
                errors["structure"] = [f"not a pymatgen Structure: {str(error)[:200]}"]
                return None
    else:
        errors["structure"] = ["expected a pymatgen Structure.as_dict() object"]
        return None
    problem = _structure_problem(structure)
    if problem:
        errors["structure"] = [problem]
        return None
    return structure


def _structure_problem(structure) -> str | None:
    if len(structure) > MAX_STRUCTURE_SITES:
        return f"{len(structure)} sites; at most {MAX_STRUCTURE_SITES} are accepted"
    try:
        structure.remove_oxidation_states()  # species such as Co3+ count as their element
    except ValueError:
        pass  # a dummy species (not an element): refused just below
    unknown = [str(e) for e in structure.composition.elements if str(e) not in ELEMENTS]
    if unknown:
        return f"elements beyond Pu: {', '.join(unknown)}"
    if not structure.is_ordered:
        return "partial occupancy (disordered structure); give an ordered structure, or formula and space_group instead"
    return None


def _combine(spectra: dict, space_group, parsed, structure) -> Submission:
    """The fields against each other: composition and space group, and where each came from."""
    notes: list[str] = []
    composition, composition_source = None, "spectra"
    if parsed is not None:
        composition, composition_source = dict(parsed.fractions), "formula"
    if structure is not None:
        from_structure = {str(e): float(x) for e, x in structure.composition.fractional_composition.items()}
        if composition is not None and set(composition) != set(from_structure):
            raise ClassifyInputError(
                {"formula": [f"elements of the formula and of the structure differ ({parsed.formula})"]}
            )
        if composition is None:
            composition, composition_source = from_structure, "structure"
    space_group_source = "payload" if space_group is not None else None
    if structure is not None:
        try:
            found = space_group_number(structure)
        except ValueError:
            found = None  # spglib fails on some inputs (overlapping sites)
        if space_group is None and found is not None:
            space_group, space_group_source = found, "structure"
        elif found is not None and found != space_group:
            notes.append(f"space group {space_group} given; the structure's symmetry is {found}")
    if composition is not None:
        outside = sorted(set(spectra) - set(composition))
        if outside:
            raise ClassifyInputError({"spectra": {e: [f"{e} is not in the material's composition"] for e in outside}})
    else:
        composition = {element: 1.0 / len(spectra) for element in spectra}
    return Submission(
        spectra=spectra,
        composition=composition,
        composition_source=composition_source,
        space_group=space_group,
        space_group_source=space_group_source,
        warnings=notes,
    )
