"""Reading topology catalogues and upserting their labels.

Parsing and storing are separate: ``read_*`` turn a file into ``LabelRow`` objects
and a list of rejected lines (``Rejection``) without touching the database, and
``upsert_labels`` stores rows idempotently (a second run changes nothing).

File formats
------------
* Materiae CSV: ``materiae_id, formula, spacegroup, mp_id, icsd_ids, soc_topo_class,
  nsoc_topo_class`` (``icsd_ids`` a JSON-like list).
* Arsenal list: one ``spacegroup, formula`` per line; the class comes from the file
  (``--raw-class`` or the file name: ``*case1*``, ``*case3*``, ``*tci*``, ``*ti*``).
* TQC CSV: ``icsd_id, formula, spacegroup, class`` (``mp_id`` optional).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from materials.chemistry import parse_formula
from materials.ingest.labels import binary_class
from materials.models import Material, TopologyLabel

MATERIAE_COLUMNS = ["materiae_id", "formula", "spacegroup", "mp_id", "icsd_ids", "soc_topo_class", "nsoc_topo_class"]
TQC_COLUMNS = ["icsd_id", "formula", "spacegroup", "class"]


class CatalogueFormatError(ValueError):
    """The file as a whole cannot be read (encoding, columns, not a CSV)."""


@dataclass(frozen=True)
class Rejection:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class LabelRow:
    line: int
    formula: str
    space_group: int
    raw_class: str
    materiae_id: str | None = None
    mp_id: str | None = None
    icsd_ids: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def read_text(path: Path) -> str:
    """Read a text file as UTF-8, naming the file and byte offset when it is not."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CatalogueFormatError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None


def _space_group(value: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"space group {value!r} is not an integer") from None
    if not 1 <= number <= 230:
        raise ValueError(f"space group {number} is outside 1-230")
    return number


def _icsd_ids(value: str) -> list[int]:
    text = (value or "").strip()
    if not text:
        return []
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"icsd_ids {text[:40]!r} is not a list of integers") from None
    if not isinstance(parsed, list) or not all(isinstance(x, int) for x in parsed):
        raise ValueError(f"icsd_ids {text[:40]!r} is not a list of integers")
    return parsed


def _csv_rows(path: Path, required: list[str]) -> Iterable[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path)))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogueFormatError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
    for row in reader:
        yield reader.line_num, row


def _collect(path: Path, items: Iterable[tuple[int, object]], build) -> tuple[list[LabelRow], list[Rejection]]:
    """Build a LabelRow from each (line, payload); a ValueError rejects that line only."""
    rows, rejected = [], []
    for line, payload in items:
        try:
            rows.append(build(line, payload))
        except ValueError as error:
            rejected.append(Rejection(str(path), line, str(error)))
    return rows, rejected


def read_materiae(path: Path) -> tuple[list[LabelRow], list[Rejection]]:
    def build(line, row):
        raw = (row["soc_topo_class"] or "").strip()
        if raw:
            binary_class("materiae", raw)  # validates the class
        nsoc = (row.get("nsoc_topo_class") or "").strip()
        materiae_id = (row["materiae_id"] or "").strip()
        if not materiae_id:
            raise ValueError("empty materiae_id")
        parse_formula(row["formula"])
        return LabelRow(
            line=line,
            formula=row["formula"].strip(),
            space_group=_space_group(row["spacegroup"]),
            raw_class=raw,
            materiae_id=materiae_id,
            mp_id=(row["mp_id"] or "").strip() or None,
            icsd_ids=_icsd_ids(row["icsd_ids"]),
            tags=[f"NSOC:{nsoc}"] if nsoc else [],
        )

    return _collect(path, _csv_rows(path, MATERIAE_COLUMNS), build)


ARSENAL_CLASS_BY_FILENAME = {"case1": "case1", "case3": "case3", "tci": "TCI", "ti": "TI"}


def arsenal_class_from_name(path: Path) -> str:
    stem = Path(path).stem.lower()
    for key in ("case1", "case3", "tci", "ti"):
        if re.search(rf"(^|_){key}($|_)", stem):
            return ARSENAL_CLASS_BY_FILENAME[key]
    raise CatalogueFormatError(
        f"{path}: cannot tell the Arsenal class from the file name; pass --raw-class case1|case3|TCI|TI"
    )


def read_arsenal(path: Path, raw_class: str | None = None) -> tuple[list[LabelRow], list[Rejection]]:
    raw_class = raw_class or arsenal_class_from_name(path)
    binary_class("arsenal", raw_class)

    def build(line, text):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"expected 'spacegroup, formula', got {text[:60]!r}")
        parse_formula(parts[1])
        return LabelRow(line=line, formula=parts[1], space_group=_space_group(parts[0]), raw_class=raw_class)

    lines = enumerate(read_text(path).splitlines(), start=1)
    return _collect(path, ((n, t) for n, t in lines if t.strip() and not t.lstrip().startswith("#")), build)


def read_tqc(path: Path) -> tuple[list[LabelRow], list[Rejection]]:
    def build(line, row):
        raw = (row["class"] or "").strip()
        binary_class("tqc", raw)
        parse_formula(row["formula"])
        try:
            icsd = int(row["icsd_id"])
        except (TypeError, ValueError):
            raise ValueError(f"icsd_id {row['icsd_id']!r} is not an integer") from None
        return LabelRow(
            line=line,
            formula=row["formula"].strip(),
            space_group=_space_group(row["spacegroup"]),
            raw_class=raw,
            mp_id=(row.get("mp_id") or "").strip() or None,
            icsd_ids=[icsd],
        )

    return _collect(path, _csv_rows(path, TQC_COLUMNS), build)


def read_catalogue(catalogue: str, path: Path, raw_class: str | None = None):
    if catalogue == "materiae":
        return read_materiae(path)
    if catalogue == "arsenal":
        return read_arsenal(path, raw_class)
    if catalogue == "tqc":
        return read_tqc(path)
    raise CatalogueFormatError(f"unknown catalogue {catalogue!r}; expected materiae, arsenal or tqc")


# --- Storing ----------------------------------------------------------------------------


@dataclass
class UpsertReport:
    materials_created: int = 0
    materials_updated: int = 0
    labels_created: int = 0
    labels_updated: int = 0
    labels_unchanged: int = 0
    unknown_class: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _new_material(row: LabelRow, source: str, release: str) -> Material:
    parsed = parse_formula(row.formula)
    return Material.new(
        row.space_group,
        materiae_id=row.materiae_id,
        mp_id=row.mp_id,
        icsd_ids=row.icsd_ids,
        formula=parsed.formula,
        reduced_formula=parsed.reduced_formula,
        elements=parsed.elements,
        source=source,
        source_release=release,
    )


class MaterialIndex:
    """In-memory lookups of existing materials by each of their identifiers."""

    def __init__(self):
        self.by_materiae, self.by_mp, self.by_icsd, self.by_formula_sg = {}, {}, {}, {}

    @classmethod
    def from_database(cls) -> MaterialIndex:
        index = cls()
        fields = ("id", "materiae_id", "mp_id", "icsd_ids", "reduced_formula", "space_group_number")
        for values in Material.objects.values_list(*fields).iterator(chunk_size=10000):
            index.add(*values)
        return index

    def add(self, pk, materiae_id, mp_id, icsd_ids, reduced_formula, space_group_number) -> None:
        if materiae_id:
            self.by_materiae[materiae_id] = pk
        if mp_id:
            self.by_mp[mp_id] = pk
        for icsd in icsd_ids or []:
            self.by_icsd.setdefault(icsd, pk)
        self.by_formula_sg.setdefault((reduced_formula, space_group_number), []).append(pk)

    def match(self, catalogue: str, row: LabelRow) -> list[int]:
        if catalogue == "materiae":
            pk = self.by_materiae.get(row.materiae_id) or (self.by_mp.get(row.mp_id) if row.mp_id else None)
            return [pk] if pk else []
        if catalogue == "tqc":
            pk = next((self.by_icsd[i] for i in row.icsd_ids if i in self.by_icsd), None)
            pk = pk or (self.by_mp.get(row.mp_id) if row.mp_id else None)
            if pk:
                return [pk]
        key = (parse_formula(row.formula).reduced_formula, row.space_group)
        return list(self.by_formula_sg.get(key, []))


def upsert_labels(catalogue: str, rows: list[LabelRow], release: str, progress=None) -> UpsertReport:
    """Store catalogue rows: match or create materials, then create or update labels.

    Idempotent: running it twice with the same rows changes nothing the second time.
    Runs in one transaction, so an error leaves the database as it was.
    """
    report = UpsertReport()
    with transaction.atomic():
        index = MaterialIndex.from_database()
        targets: list[tuple[LabelRow, list[int]]] = []
        new_materials: list[tuple[LabelRow, Material]] = []
        seen_new: dict[tuple, Material] = {}
        for row in rows:
            matches = index.match(catalogue, row)
            if matches:
                targets.append((row, matches))
                continue
            key = (
                (row.materiae_id,) if row.materiae_id else (parse_formula(row.formula).reduced_formula, row.space_group)
            )
            material = seen_new.get(key)
            if material is None:
                material = seen_new[key] = _new_material(row, source=catalogue, release=release)
            new_materials.append((row, material))
        created = list(seen_new.values())
        Material.objects.bulk_create(created, batch_size=2000)
        report.materials_created = len(created)
        targets.extend((row, [material.pk]) for row, material in new_materials)

        existing = {
            (label.material_id): label
            for label in TopologyLabel.objects.filter(catalogue=catalogue).only(
                "id", "material_id", "raw_class", "binary_class", "tags", "source_release"
            )
        }
        to_create, to_update, touched = [], [], set()
        for count, (row, material_ids) in enumerate(targets):
            if progress and count % 5000 == 0:
                progress(count, len(targets))
            if not row.raw_class:
                report.unknown_class += 1
                continue
            binary = binary_class(catalogue, row.raw_class)
            for material_id in material_ids:
                if material_id in touched:
                    continue  # the same compound listed twice: the first line wins
                touched.add(material_id)
                label = existing.get(material_id)
                if label is None:
                    to_create.append(
                        TopologyLabel(
                            material_id=material_id,
                            catalogue=catalogue,
                            raw_class=row.raw_class,
                            binary_class=binary,
                            tags=row.tags,
                            source_release=release,
                        )
                    )
                elif (label.raw_class, label.binary_class, label.tags, label.source_release) != (
                    row.raw_class,
                    binary,
                    row.tags,
                    release,
                ):
                    label.raw_class, label.binary_class, label.tags, label.source_release = (
                        row.raw_class,
                        binary,
                        row.tags,
                        release,
                    )
                    to_update.append(label)
                else:
                    report.labels_unchanged += 1
        TopologyLabel.objects.bulk_create(to_create, batch_size=2000)
        TopologyLabel.objects.bulk_update(
            to_update, ["raw_class", "binary_class", "tags", "source_release"], batch_size=2000
        )
        report.labels_created, report.labels_updated = len(to_create), len(to_update)
        changed_ids = {label.material_id for label in to_create} | {label.material_id for label in to_update}
        if changed_ids:
            TopologyLabel.objects.refresh_material_labels(changed_ids)
    return report


# --- One file, end to end ------------------------------------------------------------------


class RejectedRowsError(CatalogueFormatError):
    """Rows were rejected and the import was strict: nothing was stored."""

    def __init__(self, message: str, rejected: list[Rejection]):
        super().__init__(message)
        self.rejected = rejected


@dataclass
class ImportResult:
    """What ``import_catalogue_file`` read and stored."""

    catalogue: str
    path: str
    release: str
    rows: int
    rejected: list[Rejection]
    report: UpsertReport
    classes: dict[str, int] = field(default_factory=dict)  # "raw → binary" → rows

    def as_dict(self) -> dict:
        return {
            "catalogue": self.catalogue,
            "path": self.path,
            "release": self.release,
            "rows": self.rows,
            "rejected": [str(rejection) for rejection in self.rejected],
            "classes": self.classes,
            **self.report.as_dict(),
        }


def default_release(catalogue: str, path: Path) -> str:
    """``"<catalogue> <file name> sha256:<12 hex>"``: names the exact file imported."""
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{catalogue} {Path(path).name} sha256:{digest}"


def import_catalogue_file(
    catalogue: str,
    path: Path,
    *,
    release: str | None = None,
    raw_class: str | None = None,
    strict: bool = False,
    progress=None,
) -> ImportResult:
    """Read a catalogue file and upsert its labels (``manage.py import_labels`` and its task).

    Rejected rows are reported and the good ones stored, unless ``strict``.

    Raises
    ------
    CatalogueFormatError
        If the file as a whole cannot be read (encoding, columns, no readable row),
        or ``raw_class`` is given for a catalogue other than the Arsenal. Nothing is
        stored then.
    RejectedRowsError
        If ``strict`` and any row was rejected; nothing is stored.
    """
    path = Path(path)
    if raw_class and catalogue != "arsenal":
        raise CatalogueFormatError("a raw class applies to Arsenal lists only; the other catalogues name it per row")
    if not path.is_file():
        raise CatalogueFormatError(f"{path}: no such file")
    rows, rejected = read_catalogue(catalogue, path, raw_class)
    if not rows:
        detail = f"{len(rejected)} rejected, first {rejected[0]}" if rejected else "it is empty"
        raise CatalogueFormatError(f"{path}: no row could be read as a {catalogue} file ({detail})")
    if strict and rejected:
        raise RejectedRowsError(f"{path}: {len(rejected)} row(s) rejected and --strict is set", rejected)
    classes: dict[str, int] = {}
    for row in rows:
        key = f"{row.raw_class} → {binary_class(catalogue, row.raw_class)}" if row.raw_class else "(no class)"
        classes[key] = classes.get(key, 0) + 1
    release = release or default_release(catalogue, path)
    report = upsert_labels(catalogue, rows, release, progress)
    return ImportResult(catalogue, str(path), release, len(rows), rejected, report, dict(sorted(classes.items())))
