"""Reading measured spectrum files: what beamlines and digitising tools write. The one home of
this reading, for ``POST /api/classify/`` uploads and ``manage.py classify`` alike.

* CSV or plain text: comma, semicolon, tab or whitespace separated; ``#`` comments;
  an optional header row. Columns ``energy, mu`` (the element is given separately), or
  ``element, energy, mu`` (one file, several elements). Header names are matched loosely
  (``energy``/``E``/``energy_ev``/``energy_kev``; ``mu``/``xmu``/``absorption``/``norm``/
  ``mutrans``/``mufluor``…).
* XDI (``# XDI/1.0`` first line): ``Element.symbol``, ``Element.edge`` and ``Column.N``
  header fields; mu is a ``mu``-like column or computed from ``i0`` and ``itrans``
  (ln(i0/itrans)) or ``ifluor`` (ifluor/i0). Energies in keV are converted.

Readers raise ``SpectrumFileError`` with the line and column at fault; numbers are taken as
they are (NaN included) so that the spectrum checks (``mlcore.spectrum.validate_spectrum``)
can name the field.
"""

from __future__ import annotations

import math
import re

from mlcore.elements import ABSORBING_ELEMENTS

MAX_FILE_ROWS = 200_000


class SpectrumFileError(ValueError):
    pass


ENERGY_NAMES = ("energy", "energy_ev", "energy_kev", "e", "ev", "energy(ev)", "energy (ev)", "energy [ev]")
MU_NAMES = (
    "mu",
    "xmu",
    "mu_norm",
    "norm",
    "normalized",
    "absorption",
    "mutrans",
    "mufluor",
    "normtrans",
    "normfluor",
    "mu_trans",
    "mu_fluor",
    "flat",
    "intensity",
)
ELEMENT_NAMES = ("element", "absorber", "absorbing_element", "symbol")
SEPARATORS = re.compile(r"[,;\t]")


def decode_text(name: str, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpectrumFileError("UTF-16 text (byte-order mark); save the file as UTF-8 or ASCII")
    if b"\x00" in raw[:4096]:
        raise SpectrumFileError("not a text file (binary content)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def split_row(line: str) -> list[str]:
    if SEPARATORS.search(line):
        return [cell.strip() for cell in SEPARATORS.split(line)]
    return line.split()


def as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def read_spectrum_file(name: str, raw: bytes, element: str | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """Spectra in one uploaded file, by absorbing element: ``{element: (energies_ev, mu)}``."""
    text = decode_text(name, raw)
    if name.lower().endswith(".xdi") or text.lstrip().upper().startswith("# XDI"):
        return read_xdi(text, element)
    return read_table(text, element)


def _element_or_fail(symbol: str | None, where: str) -> str:
    if not symbol:
        raise SpectrumFileError(f"{where}: the absorbing element is not given (send the 'element' field)")
    symbol = symbol.strip()
    symbol = symbol[:1].upper() + symbol[1:].lower()
    if symbol not in ABSORBING_ELEMENTS:
        raise SpectrumFileError(f"{where}: unknown absorbing element {symbol[:10]!r}; use Li to Pu")
    return symbol


def read_table(text: str, element: str | None) -> dict[str, tuple[list[float], list[float]]]:
    header: list[str] | None = None
    columns: dict[str, int] | None = None
    energy_scale = 1.0
    spectra: dict[str, tuple[list[float], list[float]]] = {}
    rows = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "%", "!")):
            continue
        cells = split_row(stripped)
        if columns is None:
            numeric = [as_number(cell) is not None for cell in cells]
            if not all(numeric[1:]) or not any(numeric):
                if header is not None:
                    raise SpectrumFileError(f"line {number}: a second header row ({stripped[:60]!r})")
                header = [cell.lower().strip("\"' ") for cell in cells]
                columns, energy_scale = _columns_from_header(header, number)
                continue
            columns = _columns_without_header(cells, number)
        rows += 1
        if rows > MAX_FILE_ROWS:
            raise SpectrumFileError(f"more than {MAX_FILE_ROWS} rows")
        needed = max(columns.values()) + 1
        if len(cells) < needed:
            raise SpectrumFileError(f"line {number}: {len(cells)} column(s); expected at least {needed}")
        values = {}
        for key in ("energy", "mu"):
            value = as_number(cells[columns[key]])
            if value is None:
                raise SpectrumFileError(f"line {number}: {key} is not a number ({cells[columns[key]][:40]!r})")
            values[key] = value
        if "element" in columns:
            symbol = _element_or_fail(cells[columns["element"]], f"line {number}")
            if element and symbol != _element_or_fail(element, "element field"):
                raise SpectrumFileError(f"line {number}: element {symbol} but the element field says {element}")
        else:
            symbol = _element_or_fail(element, "a file with energy and mu columns")
        energies, mu = spectra.setdefault(symbol, ([], []))
        energies.append(values["energy"] * energy_scale)
        mu.append(values["mu"])
    if not spectra:
        raise SpectrumFileError("no data rows (expected columns energy and mu)")
    return spectra


def _columns_without_header(cells: list[str], number: int) -> dict[str, int]:
    if as_number(cells[0]) is None:
        if len(cells) < 3:
            raise SpectrumFileError(f"line {number}: expected element, energy, mu")
        return {"element": 0, "energy": 1, "mu": 2}
    if len(cells) < 2:
        raise SpectrumFileError(f"line {number}: expected two columns, energy (eV) and mu")
    return {"energy": 0, "mu": 1}


def _columns_from_header(header: list[str], number: int) -> tuple[dict[str, int], float]:
    columns: dict[str, int] = {}
    scale = 1.0
    for index, name in enumerate(header):
        if "element" not in columns and name in ELEMENT_NAMES:
            columns["element"] = index
        elif "energy" not in columns and (name in ENERGY_NAMES or name.startswith("energy")):
            columns["energy"] = index
            scale = 1000.0 if "kev" in name else 1.0
        elif "mu" not in columns and (name in MU_NAMES or name.startswith("mu") or name.endswith("mu")):
            columns["mu"] = index
    missing = [key for key in ("energy", "mu") if key not in columns]
    if missing:
        raise SpectrumFileError(
            f"line {number}: header {', '.join(header)[:120]!r} has no {' or '.join(missing)} column "
            "(expected e.g. 'energy,mu' or 'element,energy,mu')"
        )
    return columns, scale


XDI_FIELD = re.compile(r"^#\s*([A-Za-z_][\w]*)\.([\w]+)\s*:\s*(.*?)\s*$")
XDI_MU_COLUMNS = ("mutrans", "mufluor", "normtrans", "normfluor", "mu", "xmu", "norm", "mu_trans", "mu_fluor")


def read_xdi(text: str, element: str | None) -> dict[str, tuple[list[float], list[float]]]:
    fields: dict[str, str] = {}
    columns: dict[int, tuple[str, str]] = {}
    data: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            match = XDI_FIELD.match(stripped)
            if match:
                family, key, value = match.group(1).lower(), match.group(2).lower(), match.group(3)
                fields[f"{family}.{key}"] = value
                if family == "column" and key.isdigit():
                    parts = value.split()
                    columns[int(key)] = (parts[0].lower() if parts else "", parts[1].lower() if len(parts) > 1 else "")
            continue
        data.append((number, stripped.split()))
        if len(data) > MAX_FILE_ROWS:
            raise SpectrumFileError(f"more than {MAX_FILE_ROWS} rows")
    edge = fields.get("element.edge", "K").strip().upper()
    if edge != "K":
        raise SpectrumFileError(f"XDI header gives the {edge} edge; only K-edge spectra are accepted")
    header_symbol = fields.get("element.symbol")
    symbol = _element_or_fail(header_symbol or element, "XDI header Element.symbol")
    if header_symbol and element and _element_or_fail(element, "element field") != symbol:
        raise SpectrumFileError(f"XDI header names {symbol} but the element field says {element}")
    if not columns:
        raise SpectrumFileError("XDI header has no Column.N fields")
    by_name = {name: (index - 1, units) for index, (name, units) in columns.items()}
    if "energy" not in by_name:
        raise SpectrumFileError("XDI header has no 'energy' column")
    energy_index, energy_units = by_name["energy"]
    scale = 1000.0 if energy_units == "kev" else 1.0
    mu_name = next((name for name in XDI_MU_COLUMNS if name in by_name), None)
    if mu_name is None and not ("i0" in by_name and ("itrans" in by_name or "ifluor" in by_name)):
        raise SpectrumFileError("XDI file has no mu column (mutrans, mufluor, normtrans…) nor i0 with itrans/ifluor")
    energies, mu = [], []
    for number, cells in data:

        def cell(name: str, number=number, cells=cells) -> float:
            index = by_name[name][0]
            if index >= len(cells):
                raise SpectrumFileError(f"line {number}: no value for column {name!r}")
            value = as_number(cells[index])
            if value is None:
                raise SpectrumFileError(f"line {number}: {name} is not a number ({cells[index][:40]!r})")
            return value

        energies.append(cell("energy") * scale)
        if mu_name is not None:
            mu.append(cell(mu_name))
        elif "itrans" in by_name:
            i0, itrans = cell("i0"), cell("itrans")
            mu.append(math.log(i0 / itrans) if i0 > 0 and itrans > 0 else math.nan)
        else:
            i0 = cell("i0")
            mu.append(cell("ifluor") / i0 if i0 != 0 else math.nan)
    if not energies:
        raise SpectrumFileError("no data rows")
    return {symbol: (energies, mu)}
