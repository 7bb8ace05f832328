"""The paper's ICSD quality filter, as a pure function over an entry's metadata.

Andrejevic et al., Methods: "only ICSD entries marked as 'high quality' that included
structural refinement, temperature factors, pressure in the range of 0.09–0.11 MPa,
temperature within the range of 285–300 K, and standard deviation for cell
parameters, were retained." (The same filter as the topological quantum chemistry
database the paper's labels come from.)

``check_quality`` and ``passes_quality_filter`` take one entry's metadata as a mapping
(a CSV row, a dict built from a CIF by ``metadata_from_cif``); ``read_icsd_metadata``
reads a CSV of many. Both the MP ingestion and the screening of an ICSD release use
them, so the column names are fixed here.

Metadata columns
----------------
Header names are matched case-insensitively, ignoring spaces, ``-`` and ``_``; the
aliases are the names ICSD's CSV export and CIFs use.

``icsd_id``
    The ICSD collection code, an integer (``CollectionCode``, ``coll_code``, ``icsd``).
``r_value``
    R factor of the structural refinement; any number means the structure was refined
    (``RValue``, ``R-value``, ``r_factor``).
``structure_refined``
    Yes/no, used where no R factor is given (``structural_refinement``, ``refined``).
``temperature_factors``
    Yes/no: atomic displacement (temperature) factors are reported
    (``has_temperature_factors``, ``tf``).
``pressure_mpa``
    Pressure of the measurement in MPa (``pressure``, ``p_mpa``); or ``pressure_kpa``
    in kPa, CIF's unit, converted.
``temperature_k``
    Temperature of the measurement in K (``temperature``, ``t_k``).
``cell_std_devs``
    Yes/no: standard deviations on the cell parameters (``cell_esd``, ``has_cell_esd``).
``cell_parameters``
    The cell as ICSD prints it, ``5.4307(2) 5.4307(2) 5.4307(2) 90. 90. 90.``
    (``CellParameter``, ``cell``); read for ``cell_std_devs`` when that is absent.

Yes/no values: ``1 true yes y x`` and ``0 false no n`` (any case); empty means "not
recorded". Numbers may carry an ICSD/CIF uncertainty, ``293(2)``.

An entry that does not record its pressure or temperature fails the filter, as the
paper's wording requires, unless ``allow_missing_conditions=True``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from materials.ingest.catalogues import CatalogueFormatError, Rejection, read_text

PRESSURE_RANGE_MPA = (0.09, 0.11)
TEMPERATURE_RANGE_K = (285.0, 300.0)

_ALIASES = {
    "icsd_id": ("icsdid", "collectioncode", "collcode", "icsd", "icsdcollectioncode", "databasecodeicsd"),
    "r_value": ("rvalue", "rfactor", "refinelsrfactorall"),
    "structure_refined": ("structurerefined", "structuralrefinement", "refined", "refinement"),
    "temperature_factors": ("temperaturefactors", "hastemperaturefactors", "tf", "displacementparameters"),
    "pressure_mpa": ("pressurempa", "pressure", "pmpa"),
    "pressure_kpa": ("pressurekpa", "pkpa"),
    "temperature_k": ("temperaturek", "temperature", "tk"),
    "cell_std_devs": ("cellstddevs", "cellesd", "hascellesd", "cellstandarddeviations"),
    "cell_parameters": ("cellparameters", "cellparameter", "cell"),
}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_TRUE, _FALSE = {"1", "true", "yes", "y", "x"}, {"0", "false", "no", "n"}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\(\d+\))?\s*$")
_ESD = re.compile(r"\d\(\d+\)")


class QualityVerdict(NamedTuple):
    """Whether an entry passes, and every reason it does not (empty when it passes)."""

    passed: bool
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def canonical_column(name: str) -> str | None:
    """The canonical column a header means (see the module docstring), or None."""
    return _CANONICAL.get(re.sub(r"[\s_\-.]", "", str(name)).lower())


def _number(value, column: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "?", ".")):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _NUMBER.match(str(value))
        if not match:
            raise ValueError(f"{column} {value!r} is not a number")
        number = float(match.group(1))
    if not math.isfinite(number):
        raise ValueError(f"{column} {value!r} is not a finite number")
    return number


def _flag(value, column: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{column} {value!r} is not yes/no")


def normalize_metadata(metadata: Mapping) -> dict:
    """Map an entry's metadata onto the canonical columns, with typed values.

    Returns
    -------
    dict
        ``icsd_id`` (int or None), ``r_value``, ``pressure_mpa``, ``temperature_k``
        (float or None), ``structure_refined``, ``temperature_factors``,
        ``cell_std_devs`` (bool or None). Unknown columns are dropped.

    Raises
    ------
    ValueError
        If a value cannot be read (a temperature of "hot", a flag of "maybe").
    """
    raw: dict[str, object] = {}
    for key, value in metadata.items():
        column = canonical_column(key)
        if column is not None and raw.get(column) in (None, ""):
            raw[column] = value
    icsd = raw.get("icsd_id")
    if isinstance(icsd, str):
        icsd = icsd.strip().lower().removeprefix("icsd-").strip() or None
    try:
        icsd_id = int(icsd) if icsd is not None else None
    except (TypeError, ValueError):
        raise ValueError(f"icsd_id {raw.get('icsd_id')!r} is not an integer") from None
    pressure = _number(raw.get("pressure_mpa"), "pressure_mpa")
    if pressure is None:
        kpa = _number(raw.get("pressure_kpa"), "pressure_kpa")
        pressure = kpa / 1000.0 if kpa is not None else None
    cell_std_devs = _flag(raw.get("cell_std_devs"), "cell_std_devs")
    if cell_std_devs is None and str(raw.get("cell_parameters") or "").strip():
        cell_std_devs = bool(_ESD.search(str(raw["cell_parameters"])))
    return {
        "icsd_id": icsd_id,
        "r_value": _number(raw.get("r_value"), "r_value"),
        "structure_refined": _flag(raw.get("structure_refined"), "structure_refined"),
        "temperature_factors": _flag(raw.get("temperature_factors"), "temperature_factors"),
        "pressure_mpa": pressure,
        "temperature_k": _number(raw.get("temperature_k"), "temperature_k"),
        "cell_std_devs": cell_std_devs,
    }


def check_quality(metadata: Mapping, *, allow_missing_conditions: bool = False) -> QualityVerdict:
    """Apply the paper's ICSD quality filter to one entry.

    Parameters
    ----------
    metadata
        The entry's metadata, with the columns of the module docstring (raw strings
        from a CSV, or the typed values of ``normalize_metadata``).
    allow_missing_conditions
        Let an entry that records no pressure or no temperature pass that test (one
        that records a value outside the range still fails).

    Returns
    -------
    QualityVerdict
        ``passed`` and, when it fails, every failed criterion in the paper's order.

    Raises
    ------
    ValueError
        If a value cannot be read.
    """
    entry = normalize_metadata(metadata)
    reasons = []
    refined = entry["r_value"] is not None or bool(entry["structure_refined"])
    if not refined:
        reasons.append("no structural refinement (no R value)")
    if not entry["temperature_factors"]:
        reasons.append("no temperature factors")
    for condition, value, (low, high), unit in (
        ("pressure", entry["pressure_mpa"], PRESSURE_RANGE_MPA, "MPa"),
        ("temperature", entry["temperature_k"], TEMPERATURE_RANGE_K, "K"),
    ):
        if value is None:
            if not allow_missing_conditions:
                reasons.append(f"{condition} not recorded")
        elif not low <= value <= high:
            reasons.append(f"{condition} {value:g} {unit} outside {low:g}-{high:g} {unit}")
    if not entry["cell_std_devs"]:
        reasons.append("no standard deviations on the cell parameters")
    return QualityVerdict(not reasons, tuple(reasons))


def passes_quality_filter(metadata: Mapping, *, allow_missing_conditions: bool = False) -> tuple[bool, str]:
    """``(passed, reason)``: ``check_quality`` with its reasons joined by "; "."""
    verdict = check_quality(metadata, allow_missing_conditions=allow_missing_conditions)
    return verdict.passed, verdict.reason


def read_icsd_metadata(path: Path) -> tuple[dict[int, dict], list[Rejection]]:
    """Read a CSV of ICSD metadata, one entry per row, keyed by ICSD id.

    Returns
    -------
    tuple
        ``{icsd_id: normalized metadata}`` and the rows rejected (``file:line:
        reason``): no or a bad ICSD id, an unreadable value, an id listed twice.

    Raises
    ------
    CatalogueFormatError
        If the file is not UTF-8 text or has no column naming the ICSD id.
    """
    reader = csv.DictReader(io.StringIO(read_text(path)))
    columns = {canonical_column(name) for name in reader.fieldnames or []}
    if "icsd_id" not in columns:
        raise CatalogueFormatError(f"{path}: no ICSD id column (icsd_id or CollectionCode); found {reader.fieldnames}")
    entries: dict[int, dict] = {}
    rejected: list[Rejection] = []
    for row in reader:
        try:
            entry = normalize_metadata(row)
            if entry["icsd_id"] is None:
                raise ValueError("no ICSD id")
            if entry["icsd_id"] in entries:
                raise ValueError(f"ICSD id {entry['icsd_id']} listed twice")
        except ValueError as error:
            rejected.append(Rejection(str(path), reader.line_num, str(error)))
            continue
        entries[entry["icsd_id"]] = entry
    return entries, rejected


_CIF_TEMPERATURE = ("_diffrn_ambient_temperature", "_cell_measurement_temperature")
_CIF_PRESSURE_KPA = ("_diffrn_ambient_pressure", "_cell_measurement_pressure")
_CIF_R_FACTOR = ("_refine_ls_r_factor_all", "_refine_ls_r_factor_gt", "_refine_ls_r_factor_obs")
_CIF_DISPLACEMENT = (
    "_atom_site_b_iso_or_equiv",
    "_atom_site_u_iso_or_equiv",
    "_atom_site_aniso_u_11",
    "_atom_site_aniso_b_11",
    "_atom_site_aniso_beta_11",
)


def metadata_from_cif(text: str) -> dict:
    """The quality-filter metadata of an ICSD CIF (its first data block).

    Reads the R factor (``_refine_ls_R_factor_*``), the displacement parameters
    (``_atom_site_B/U_iso_or_equiv`` or anisotropic ones), the pressure (CIF gives
    kPa), the temperature, and whether ``_cell_length_*`` carry uncertainties.

    Raises
    ------
    ValueError
        If the text is not a CIF or a value cannot be read.
    """
    from pymatgen.io.cif import CifFile

    try:
        blocks = CifFile.from_str(text).data
    except Exception as error:  # pymatgen raises several types on text that is not a CIF
        raise ValueError(f"not a CIF: {error}") from None
    if not blocks:
        raise ValueError("not a CIF: no data block")
    tags = {key.lower(): value for key, value in next(iter(blocks.values())).data.items()}

    def first(names):
        for name in names:
            value = tags.get(name)
            if isinstance(value, list):
                value = next((v for v in value if v not in ("?", ".")), None)
            if value not in (None, "", "?", "."):
                return value
        return None

    displacement = any(
        any(v not in ("?", ".") for v in (tags[name] if isinstance(tags[name], list) else [tags[name]]))
        for name in _CIF_DISPLACEMENT
        if name in tags
    )
    lengths = " ".join(str(tags.get(f"_cell_length_{axis}", "")) for axis in "abc")
    return normalize_metadata(
        {
            "icsd_id": first(["_database_code_icsd"]),
            "r_value": first(_CIF_R_FACTOR),
            "temperature_factors": displacement,
            "pressure_kpa": first(_CIF_PRESSURE_KPA),
            "temperature_k": first(_CIF_TEMPERATURE),
            "cell_std_devs": bool(_ESD.search(lengths)),
        }
    )
