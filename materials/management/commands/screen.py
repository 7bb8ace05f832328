import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from materials.models import ScreeningBatch, Status
from materials.screening import ReleaseError, candidates_csv, create_batch, read_release, start_screening_batch


class Command(BaseCommand):
    help = (
        "Screen a release of structures: a folder or zip of CIF files (an ICSD export), optionally with a CSV of "
        "ICSD metadata for the quality filter. Prints per-stage counts, the files rejected with reasons, and "
        "writes the ranked candidates as CSV."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="folder or .zip of .cif files (+ optional metadata .csv)")
        parser.add_argument("--name", required=True, help="a name for this screening batch")
        parser.add_argument("--output", type=Path, help="where to write the ranked CSV (default: <name>.csv in var/)")

    def handle(self, *args, path: Path, name: str, output: Path | None, **options):
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder")
        try:
            read_release(path)  # fail fast on a release that cannot be read at all
        except ReleaseError as error:
            raise CommandError(str(error)) from None
        batch = create_batch(name=name, source=str(path.resolve()))
        start_screening_batch(batch.pk)
        batch = self.wait(batch)
        for reject in batch.rejected:
            self.stdout.write(self.style.WARNING(f"  rejected {reject['file']}: {reject['reason']}"))
        for stage, count in batch.stage_counts.items():
            self.stdout.write(f"  {stage:20s} {count}")
        if batch.status != Status.DONE:
            raise CommandError(f"screening failed: {batch.error}")
        from django.conf import settings

        output = output or Path(settings.DATA_DIR) / f"screening-{batch.pk}.csv"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(candidates_csv(batch))
        self.stdout.write(self.style.SUCCESS(f"batch {batch.pk} '{name}': ranked candidates written to {output}"))

    def wait(self, batch: ScreeningBatch) -> ScreeningBatch:
        last = ""
        while True:
            batch.refresh_from_db()
            if batch.progress_message != last:
                self.stdout.write(f"  [{batch.progress:4.0%}] {batch.progress_message}")
                last = batch.progress_message
            if batch.is_finished:
                return batch
            time.sleep(0.5)
