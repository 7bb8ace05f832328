"""Reading a release: the one home for getting a release's files, and for refusing a bad one.

A release is a folder or zip of CIFs (an ICSD export, with an optional metadata CSV),
or the AMCSD copy shipped inside ``larixite`` (9,275 CIFs), named by ``AMCSD_SOURCE``.
``read_release`` reads a folder or zip (a path, or an uploaded file) at once, with zip-bomb,
member-count, path and encryption guards; ``read_upload`` adds the upload limits (size, a
.zip name). The API (400, or 413 for size), the upload form and ``manage.py screen`` all
refuse a bad release with this module's ``ReleaseError``, whose message names the file and
the member at fault. Files other than CIFs and the metadata CSV are set aside with a reason,
not refused. ``amcsd_ids`` and ``read_amcsd`` read the AMCSD in chunks, so parsing
processes each read their own entries; ``read_files`` reads a few named files back for stage 2.
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

MAX_MEMBERS = 20_000
MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200  # a CIF compresses ~5-10x; far beyond that is a bomb
MAX_CIF_BYTES = 5 * 1024 * 1024
#: ``ScreeningBatch.source`` of a screening of the AMCSD copy inside larixite.
AMCSD_SOURCE = "larixite:amcsd"
AMCSD_NAME = re.compile(r"amcsd_(\d+)\.cif")


class ReleaseError(ValueError):
    """The release as a whole cannot be screened (not a zip, a zip bomb, no CIFs…).

    ``code`` says which: ``too_large`` (an upload over the limit: HTTP 413), ``not_zip``,
    ``unreadable``, ``too_many_files``, ``zip_bomb``, ``encrypted``, ``unsafe_path``, ``no_cif``.
    """

    def __init__(self, message: str, code: str = "unreadable"):
        super().__init__(message)
        self.code = code


@dataclass
class ReleaseFile:
    name: str
    text: str


@dataclass
class Release:
    cifs: list[ReleaseFile] = field(default_factory=list)
    metadata_csv: str | None = None
    rejected: list[dict] = field(default_factory=list)


def _decode(name: str, data: bytes, rejected: list[dict]) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")  # old ICSD exports are Latin-1
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            rejected.append({"file": name, "reason": "not text (cannot decode)"})
            return None


def _read_member(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes; a corrupt or unsupported member makes the whole zip unreadable."""
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, OSError) as error:
        raise ReleaseError(f"{name}: cannot read {info.filename[:100]} ({error})") from None


def check_members(name: str, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip by its directory alone, before anything is decompressed: too many files, a
    zip bomb, an encrypted member or an unsafe path (absolute, ``..``, backslashes)."""
    if len(infos) > MAX_MEMBERS:
        raise ReleaseError(
            f"{name}: {len(infos)} files in the zip; at most {MAX_MEMBERS} are accepted", "too_many_files"
        )
    total = sum(info.file_size for info in infos)
    compressed = sum(info.compress_size for info in infos) or 1
    if total > MAX_UNCOMPRESSED_BYTES or total / compressed > MAX_COMPRESSION_RATIO:
        raise ReleaseError(
            f"{name}: refusing to unpack {total} bytes from {compressed} compressed "
            f"(limit {MAX_UNCOMPRESSED_BYTES} bytes, ratio {MAX_COMPRESSION_RATIO}); this looks like a zip bomb",
            "zip_bomb",
        )
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.filename.startswith("/") or ".." in path.parts or "\\" in info.filename:
            raise ReleaseError(f"{name}: {info.filename[:100]} has an unsafe path", "unsafe_path")
        if info.flag_bits & 0x1:
            raise ReleaseError(f"{name}: {info.filename[:100]} is encrypted; send an unencrypted zip", "encrypted")


def read_release(source, name: str | None = None) -> Release:
    """Read CIFs (and an optional metadata CSV) from a folder or a zip: a path, or an open
    binary file such as an upload (then ``name`` is its name in messages).

    Raises
    ------
    ReleaseError
        For a file that is not a readable zip, one refused by ``check_members``, or no CIF at all;
        the message starts with the release's name and names the member at fault.
    """
    if isinstance(source, (str, Path)):
        source = Path(source)
        name = name or source.name
        if source.is_dir():
            files = [p for p in sorted(source.rglob("*")) if p.is_file()]
            members = [(p.relative_to(source).as_posix(), p.stat().st_size, p.read_bytes) for p in files]
            return _collect(name, members)
    name = name or getattr(source, "name", None) or "the release"
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ReleaseError(f"{name}: not a readable zip file ({error})") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        check_members(name, infos)
        members = [(info.filename, info.file_size, lambda i=info: _read_member(name, archive, i)) for info in infos]
        return _collect(name, members)


def _collect(name: str, members) -> Release:
    release = Release()
    for member, size, read in members:
        lower = member.lower()
        if "__macosx" in lower or Path(member).name.startswith("."):
            continue
        if lower.endswith(".csv") and release.metadata_csv is None:
            release.metadata_csv = _decode(member, read(), release.rejected)
        elif lower.endswith(".cif"):
            if size > MAX_CIF_BYTES:
                release.rejected.append({"file": member, "reason": f"CIF of {size} bytes exceeds {MAX_CIF_BYTES}"})
                continue
            text = _decode(member, read(), release.rejected)
            if text is not None:
                release.cifs.append(ReleaseFile(member, text))
        else:
            release.rejected.append({"file": member, "reason": "not a .cif or .csv file"})
    if not release.cifs:
        aside = "; ".join(f"{item['file'][:100]}: {item['reason']}" for item in release.rejected[:5])
        raise ReleaseError(f"{name}: no .cif files found" + (f" (set aside: {aside})" if aside else ""), "no_cif")
    return release


def read_upload(upload, max_bytes: int) -> Release:
    """``read_release`` of an uploaded file, after the upload limits: at most ``max_bytes``, a
    .zip by name. The upload is left at its start, to be stored."""
    name = Path(upload.name or "upload").name[:100]
    if upload.size > max_bytes:
        raise ReleaseError(f"{name} is {upload.size} bytes; the limit is {max_bytes} bytes", "too_large")
    if not name.lower().endswith(".zip"):
        raise ReleaseError(f"{name}: not a .zip file; upload a .zip of .cif files", "not_zip")
    try:
        upload.seek(0)
        return read_release(upload, name)
    finally:
        upload.seek(0)


# --- The AMCSD copy inside larixite ---------------------------------------------------------


@lru_cache(maxsize=1)
def _amcsd():
    from larixite.amcsd import get_amcsd

    return get_amcsd()


def amcsd_version() -> str:
    from importlib.metadata import version

    return f"AMCSD (larixite {version('larixite')})"


def amcsd_ids() -> list[int]:
    """Every entry id of the AMCSD copy, in order."""
    from sqlalchemy import select

    database = _amcsd()
    table = database.tables["cif"]
    return sorted(row[0] for row in database.execall(select(table.c.id)))


def amcsd_file_name(amcsd_id: int) -> str:
    return f"amcsd_{amcsd_id}.cif"


def read_amcsd(ids: list[int]) -> tuple[list[ReleaseFile], list[dict]]:
    """The CIF text of the given AMCSD entries, and the ones that cannot be read.

    larixite's ``get_cif`` makes five queries per entry; here one query reads a chunk's
    rows and the small lookup tables are read once per process. The text is larixite's
    own (``CifStructure.ciftext``), from the same values ``get_cif`` would set.
    """
    from sqlalchemy import select

    database = _amcsd()
    minerals, spacegroups, publications = _amcsd_lookups()
    table = database.tables["cif"]
    rows = {row.id: row for row in database.execall(select(table).where(table.c.id.in_(list(ids))))}
    files, rejected = [], []
    for amcsd_id in ids:
        name = amcsd_file_name(amcsd_id)
        try:
            row = rows.get(amcsd_id)
            if row is None:
                raise ValueError("no such entry")
            entry = _cif_structure(database, row, minerals, spacegroups, publications)
            files.append(ReleaseFile(name, entry.ciftext))
        except Exception as error:  # larixite raises several types for odd entries
            rejected.append({"file": name, "reason": f"cannot read the entry: {error}"})
    return files, rejected


@lru_cache(maxsize=1)
def _amcsd_lookups():
    from larixite.amcsd import CifPublication

    database = _amcsd()
    minerals = {row.id: row for row in database.get_all("minerals")}
    spacegroups = {row.id: row for row in database.get_all("spacegroups")}
    authors = {row.id: row.name for row in database.get_all("authors")}
    by_publication: dict[int, list[str]] = {}
    for link in database.get_all("publication_authors"):
        by_publication.setdefault(link.publication_id, []).append(authors.get(link.author_id, ""))
    publications = {
        row.id: CifPublication(
            row.id,
            row.journalname,
            row.year,
            row.volume,
            row.page_first,
            row.page_last,
            tuple(by_publication.get(row.id, ())),
        )
        for row in database.get_all("publications")
    }
    return minerals, spacegroups, publications


def _cif_structure(database, cif, minerals, spacegroups, publications):
    """larixite's ``AMCSD.get_cif`` for a row already read."""
    import json

    from larixite.amcsd import CifStructure
    from larixite.amcsd_utils import get_optarray

    group = spacegroups[cif.spacegroup_id]
    hm_symbol = group.hm_notation.split("%var")[0]
    out = CifStructure(
        ams_id=cif.id,
        publication=publications[cif.publication_id],
        mineral=minerals[cif.mineral_id],
        spacegroup=group,
        hm_symbol=hm_symbol,
        ams_db=database,
    )
    for attr in ("formula_title", "compound", "formula", "pub_title"):
        setattr(out, attr, getattr(cif, attr, "<missing>"))
    for attr in ("a", "b", "c", "alpha", "beta", "gamma", "cell_volume", "crystal_density"):
        value = getattr(cif, attr, "-1")
        if value is not None:
            value = value.split("(")[0]
            if "," in value and "." not in value:
                value = value.replace(",", ".")
            try:
                value = float(value)
            except ValueError:
                pass
        setattr(out, attr, value)
    for attr in ("atoms_sites", "atoms_aniso_label"):
        value = getattr(cif, attr, "<missing>")
        setattr(out, attr, "<missing>" if value in (None, "<missing>") else json.loads(value))
    if out.atoms_sites not in (None, "<missing>"):
        out.natoms = len(out.atoms_sites)
        for attr in (
            "atoms_x",
            "atoms_y",
            "atoms_z",
            "atoms_occupancy",
            "atoms_u_iso",
            "atoms_aniso_u11",
            "atoms_aniso_u22",
            "atoms_aniso_u33",
            "atoms_aniso_u12",
            "atoms_aniso_u13",
            "atoms_aniso_u23",
        ):
            value = get_optarray(getattr(cif, attr))
            value = None if value == "0" else [2.0 if v in ("?", ".") else float(v) for v in value]
            setattr(out, attr, value)
    out.hkls = getattr(cif, "hkls", None)
    return out


def read_files(source: str, names: list[str]) -> dict[str, str]:
    """The text of the named files of a release (``AMCSD_SOURCE``, a folder or a zip)."""
    wanted = set(names)
    if source == AMCSD_SOURCE:
        ids = [int(m.group(1)) for m in map(AMCSD_NAME.fullmatch, names) if m]
        files, _ = read_amcsd(ids)
    else:
        files = [item for item in read_release(Path(source)).cifs if item.name in wanted]
    return {item.name: item.text for item in files if item.name in wanted}
