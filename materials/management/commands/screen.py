from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from materials.management.commands._screening import add_screening_arguments, run_and_report
from materials.screening.pipeline import create_batch
from materials.screening.release import ReleaseError, read_release


class Command(BaseCommand):
    help = (
        "Screen a release of structures: a folder or zip of CIF files (an ICSD export), optionally with a CSV of "
        "ICSD metadata for the quality filter. Stage 1 ranks every structure with the composition + symmetry "
        "prior; stage 2 computes FEFF spectra for --feff-budget materials (most uncertain prior first) and "
        "classifies them with the spectral model. Prints per-stage counts and rejected files with reasons, "
        "and writes the ranking as CSV."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="folder or .zip of .cif files (+ optional metadata .csv)")
        parser.add_argument("--name", required=True, help="a name for this screening batch")
        add_screening_arguments(parser)

    def handle(
        self, *args, path: Path, name: str, feff_budget: int, feff_max_sites: int | None, output: Path | None, **options
    ):
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder")
        try:
            read_release(path)  # fail fast on a release that cannot be read at all
        except ReleaseError as error:
            raise CommandError(str(error)) from None
        batch = create_batch(
            name=name, source=str(path.resolve()), feff_budget=feff_budget, feff_max_sites=feff_max_sites
        )
        run_and_report(self, batch, output)
