"""What ``screen`` and ``screen_amcsd`` share: start a batch, follow it, print the outcome."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from materials.models import ScreeningBatch, Status
from materials.screening.ranking import candidates_csv, ranked_rows, stage_rows

SHOWN = 10


def non_negative(value: str) -> int:
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative")
    return number


def run_and_report(command, batch: ScreeningBatch, output: Path | None) -> ScreeningBatch:
    from materials.screening.background import start_screening_batch

    start_screening_batch(batch.pk)
    batch = wait(command, batch)
    rejected = batch.rejected or []
    for reject in rejected[:20]:
        command.stdout.write(command.style.WARNING(f"  rejected {reject['file']}: {reject['reason']}"))
    if len(rejected) > 20:
        command.stdout.write(command.style.WARNING(f"  … and {len(rejected) - 20} more (all in the CSV of rejects)"))
    for _, label, count in stage_rows(batch.stage_counts or {}):
        command.stdout.write(f"  {label:42s} {count}")
    if batch.status != Status.DONE:
        raise CommandError(f"screening failed: {batch.error}")
    output = output or Path(settings.DATA_DIR) / f"screening-{batch.pk}.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(candidates_csv(batch))
    if rejected:
        import csv

        with open(output.with_name(output.stem + "-rejected.csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "reason"])
            writer.writeheader()
            writer.writerows(rejected)
    command.stdout.write("  top candidates nobody has labelled:")
    for row in ranked_rows(batch, label="unlabelled").exclude(probability=None).select_related("material")[:SHOWN]:
        command.stdout.write(
            f"    P={row.probability:.3f} {row.material.reduced_formula:24s} SG {row.material.space_group_number:<3d} "
            f"{row.stage:8s} {row.reason}"
        )
    command.stdout.write(
        command.style.SUCCESS(f"batch {batch.pk} '{batch.name}': ranked candidates written to {output}")
    )
    return batch


def wait(command, batch: ScreeningBatch) -> ScreeningBatch:
    last = ""
    while True:
        batch.refresh_from_db()
        if batch.progress_message != last:
            command.stdout.write(f"  [{batch.progress:4.0%}] {batch.progress_message}")
            last = batch.progress_message
        if batch.is_finished:
            return batch
        time.sleep(0.5)
