"""What ``screen`` and ``screen_amcsd`` share: start a batch, follow it, print the outcome."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from materials.learning.ranking import RankFilter
from materials.models import ScreeningBatch, Status
from materials.screening.ranking import batches, candidates_csv, ranked, stage_rows

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


def add_screening_arguments(parser) -> None:
    """The options every screening command takes: the FEFF budget, the FEFF size limit, the CSV."""
    parser.add_argument(
        "--feff-budget", type=non_negative, default=0, help="materials that get FEFF spectra (default 0)"
    )
    parser.add_argument(
        "--feff-max-sites",
        type=non_negative,
        default=None,
        help="FEFF only for structures with at most this many sites in the file's cell (default 24)",
    )
    parser.add_argument("--output", type=Path, help="where to write the ranked CSV (default: var/screening-N.csv)")


def run_and_report(command, batch: ScreeningBatch, output: Path | None) -> ScreeningBatch:
    from materials.screening.background import start_screening_batch

    # Without a broker the screening runs inside start_screening_batch: a thread reports its
    # progress meanwhile (with one, the work is on workers and the thread reports it as well).
    watcher = threading.Thread(target=wait, args=(command, batch.pk), daemon=True)
    watcher.start()
    start_screening_batch(batch.pk)
    watcher.join()
    batch.refresh_from_db()
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
    for row in ranked(batches().get(pk=batch.pk), RankFilter(label="unlabelled")).page(None, 0, SHOWN):
        command.stdout.write(
            f"    P={row.probability:.3f} {row.decision:11s} {row.reduced_formula:24s} "
            f"SG {row.space_group_number or 0:<3d} {row.stage:8s} {row.reason}"
        )
    command.stdout.write(
        command.style.SUCCESS(f"batch {batch.pk} '{batch.name}': ranked candidates written to {output}")
    )
    return batch


def wait(command, batch_id: int) -> None:
    """Print the batch's progress messages until it finishes (runs in its own thread)."""
    from django.db import DatabaseError, connection

    last = ""
    try:
        while True:
            try:
                batch = ScreeningBatch.objects.only("status", "progress", "progress_message").get(pk=batch_id)
            except (ScreeningBatch.DoesNotExist, DatabaseError):  # not visible from here (a test's transaction)
                return
            if batch.progress_message != last:
                command.stdout.write(f"  [{batch.progress:4.0%}] {batch.progress_message}")
                last = batch.progress_message
            if batch.is_finished:
                return
            time.sleep(0.5)
    finally:
        connection.close()  # this thread's own connection
