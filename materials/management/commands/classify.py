"""``manage.py classify``: classify one material from spectrum files, as ``POST /api/classify/`` does.

The same readers, checks and answer as the API (:mod:`materials.learning.classify_inputs`,
:func:`materials.learning.classify.classify_submission`): a JSON file holds the API's request body
(``{"spectra": {"Co": {"energies_ev": [...], "mu": [...]}}, "formula": ..., "space_group": ...}``);
CSV/text and XDI files are read like multipart uploads (one file per element, or an
``element, energy, mu`` table). Nothing is stored. Bad input stops with a message naming
the file and the problem; ``--json`` writes the API's response body.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from materials.learning.classify import ModelUnavailable, classify_submission
from materials.learning.classify_inputs import (
    ClassifyInputError,
    check_submission,
    read_request,
    read_structure_upload,
    spectra_from_files,
)

EXAMPLES = """
Examples:
  manage.py classify licoo2.json
  manage.py classify co_k.csv --element Co --formula LiCoO2 --space-group 166
  manage.py classify ti_k.xdi o_k.xdi --structure TiO2.cif --sort-energies
"""


def flatten(detail, prefix: str = "") -> list[str]:
    """DRF error detail (nested dicts and lists) as ``field.sub: message`` lines."""
    if isinstance(detail, dict):
        return [line for key, value in detail.items() for line in flatten(value, f"{prefix}{key}.")]
    if isinstance(detail, list):
        return [line for item in detail for line in flatten(item, prefix)]
    field = prefix.rstrip(".")
    return [f"{field}: {detail}" if field and field != "non_field_errors" else str(detail)]


class Command(BaseCommand):
    help = "Classify one material from its K-edge spectra (JSON as the API takes it, CSV/text or XDI files)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        parser.epilog = EXAMPLES
        return parser

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", type=Path, help="one .json request body, or CSV/text/XDI spectra")
        parser.add_argument("--element", help="absorbing element of a two-column CSV file")
        parser.add_argument("--formula", help="chemical formula (elements without a spectrum are reported)")
        parser.add_argument("--space-group", type=int, help="space group number 1-230")
        parser.add_argument("--structure", type=Path, help="a CIF (or POSCAR) giving composition and space group")
        parser.add_argument("--sort-energies", action="store_true", help="sort points by energy first")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the answer as JSON")

    def handle(self, *args, files, element, formula, space_group, structure, sort_energies, as_json: bool, **options):
        raw = read_files([*files, *([structure] if structure else [])])
        try:
            submission = self.submission(files, raw, element, formula, space_group, structure, sort_energies)
            answer = classify_submission(submission)
        except ClassifyInputError as error:
            raise CommandError(f"invalid input: {error}") from None
        except ModelUnavailable as error:
            raise CommandError(str(error)) from None
        if as_json:
            self.stdout.write(json.dumps(answer, indent=1))
            return
        self.write_answer(answer)

    def write_answer(self, answer: dict) -> None:
        calibrated = "calibrated " if answer["calibrated"] else ""
        band = answer["band"]
        style = self.style.WARNING if answer["decision"] == "abstain" else self.style.SUCCESS
        self.stdout.write(
            style(
                f"{answer['decision']}: {calibrated}P(topological) = {answer['probability']:.3f} "
                f"(abstain between {band['low']:.2f} and {band['high']:.2f}; model {answer['model_version']} "
                f"{answer['model_kind']}, {answer['answered_by']})"
            )
        )
        seen = ", ".join(answer["elements"]) or "none"
        missing = ", ".join(answer["missing_elements"])
        self.stdout.write(f"  spectra seen: {seen}" + (f"; no spectrum for {missing}" if missing else ""))
        for reason in answer["reasons"]:
            self.stdout.write(self.style.WARNING(f"  abstain ({reason['code']}): {reason['text']}"))
        for note in answer["warnings"]:
            self.stdout.write(self.style.WARNING(f"  {note}"))

    def submission(self, files, raw, element, formula, space_group, structure, sort_energies):
        """The checked submission: a JSON request body (options override its fields), or spectrum files."""
        if any(path.suffix.lower() == ".json" for path in files):
            if len(files) != 1:
                raise CommandError("a .json file holds the whole request: give it alone")
            payload = read_json(files[0], raw[files[0]])
            for key, value in (("formula", formula), ("space_group", space_group)):
                if value is not None:
                    payload[key] = value
            if sort_energies:
                payload["sort_energies"] = True
            if structure is not None:
                payload["structure"] = self.structure(structure, raw)
            return read_request(payload)
        spectra = spectra_from_files([(path.name, raw[path]) for path in files], element)
        return check_submission(
            spectra,
            formula=formula,
            space_group=space_group,
            structure=self.structure(structure, raw) if structure is not None else None,
            sort_energies=sort_energies,
        )

    def structure(self, path: Path, raw: dict):
        try:
            return read_structure_upload(path.name, raw[path])
        except ClassifyInputError as error:
            raise CommandError(f"{path}: {error}") from None


def read_files(paths: list[Path]) -> dict[Path, bytes]:
    """Each file's bytes, within the API's limit on a classify request."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = {}
    for path in paths:
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        size = path.stat().st_size
        if size > limit:
            raise CommandError(f"{path}: {size} bytes; the limit is {limit} bytes (as for POST /api/classify/)")
        raw[path] = path.read_bytes()
    return raw


def read_json(path: Path, raw: bytes) -> dict:
    try:
        payload = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise CommandError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None
    except json.JSONDecodeError as error:
        raise CommandError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(payload, dict) or "spectra" not in payload:
        raise CommandError(f"{path}: expected a JSON object with a 'spectra' field")
    return payload
