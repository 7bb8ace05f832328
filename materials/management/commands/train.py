import json
import time

from django.core.management.base import BaseCommand, CommandError

from materials import jobs
from materials.learning.training import (
    DEFAULT_SPLIT,
    EVERY_KIND,
    best_by_validation,
    get_or_create_split,
    request_training,
    validation_score,
)
from materials.models import Dataset, ModelVersion, Status, TrainingRun
from mlcore.training import hyperparameters_for


class Command(BaseCommand):
    help = (
        "Train a model version (or every kind, --kind all) on a stored split and print its test metrics; "
        "--promote makes the trained model (with --kind all: the best by validation score) production."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--kind",
            required=True,
            choices=[*ModelVersion.Kind.values, "all"],
            help="a model kind, or 'all' for every kind in turn (the catalogue prior first)",
        )
        parser.add_argument("--epochs", type=int, help="training epochs (neural models)")
        parser.add_argument("--split", default=DEFAULT_SPLIT, help=f"split name (default {DEFAULT_SPLIT})")
        parser.add_argument("--seed", type=int, default=0, help="seed of a new split and of the model")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a hyperparameter (JSON value), repeatable",
        )
        parser.add_argument(
            "--promote", dest="promote_after", action="store_true", help="promote the trained model to production"
        )

    def handle(self, *args, kind, epochs, split, seed, param, promote_after: bool, **options):
        hyperparameters = {"random_state": seed}
        for item in param:
            name, _, value = item.partition("=")
            try:
                hyperparameters[name] = json.loads(value)
            except json.JSONDecodeError:
                hyperparameters[name] = value
        if epochs is not None:
            hyperparameters["epochs"] = epochs
        kinds = EVERY_KIND if kind == "all" else (kind,)
        try:
            dataset = Dataset.objects.filter(name=split).first() or get_or_create_split(split, seed=seed)
        except (ValueError, TypeError) as error:
            raise CommandError(str(error)) from None
        versions = []
        for name in kinds:
            started = time.perf_counter()
            # --epochs applies to the kinds trained by epochs (the CNNs) when several kinds are trained.
            own = {k: v for k, v in hyperparameters.items() if k != "epochs" or len(kinds) == 1 or epochs_apply(name)}
            try:
                run = request_training(name, own, dataset=dataset)
            except (ValueError, TypeError) as error:
                raise CommandError(str(error)) from None
            run = self.wait(run)
            if run.status != Status.DONE:
                raise CommandError(f"training {name} failed: {run.error}")
            version = run.model_version
            version.refresh_from_db()
            self.print_metrics(version, time.perf_counter() - started)
            versions.append(version)
        if promote_after:
            chosen = best_by_validation(versions)
            if len(versions) > 1:
                auc, f1 = validation_score(chosen)
                self.stdout.write(
                    f"best by validation: {chosen.kind} (validation ROC AUC {auc:.3f}, topological F1 {f1:.3f})"
                )
            job = jobs.promote(chosen.pk)
            if job.status != Status.DONE:
                raise CommandError(f"promoting {chosen} failed: {job.error}")
            chosen.refresh_from_db()
            self.stdout.write(self.style.SUCCESS(f"promoted {chosen} to production"))

    def wait(self, run: TrainingRun) -> TrainingRun:
        last = ""
        while True:
            run.refresh_from_db()
            if run.progress_message != last:
                self.stdout.write(f"  {run.progress_message}")
                last = run.progress_message
            if run.is_finished:
                return run
            time.sleep(1)

    def print_metrics(self, version: ModelVersion, seconds: float | None = None) -> None:
        metrics = version.metrics
        took = f", {seconds:.0f} s" if seconds is not None else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"model {version.pk} ({version.kind}) on split {version.dataset.name} [{version.split_hash[:10]}], "
                f"threshold {version.threshold:.3f}, n={metrics['n']}{took}"
            )
        )
        for target in ("topological", "trivial"):
            cells = []
            for name in ("recall", "precision", "f1"):
                entry = metrics["test_ci"][f"{target}_{name}"]
                cells.append(f"{name} {_fmt(entry['value'])} [{_fmt(entry['low'])}, {_fmt(entry['high'])}]")
            self.stdout.write(f"  test {target:12s} " + "  ".join(cells))


def epochs_apply(kind: str) -> bool:
    return "epochs" in hyperparameters_for(kind)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
