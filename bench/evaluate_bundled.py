"""What spectra add beyond composition and symmetry, on the bundled data, over many splits.

Usage::

    .venv/bin/python bench/evaluate_bundled.py --fresh --seeds 0-9 [--all-kinds-seeds 0] [--tune]

Everything goes through the application's own code, so the numbers are the ones
``manage.py train`` would store: a scratch PostgreSQL database ``screening_evaluate``
(on the server ``DATABASE_URL`` names, or 127.0.0.1:5432) gets the bundled data with
``load_bundled``; each seed S is the stored split ``bundled-element-balanced-v2-seedS``
(element-balanced 70/10/20, every element in training; ``get_or_create_split``), and
every model is trained with ``mlcore.training.fit_model`` through
``materials.learning.training`` with random_state S, as ``manage.py train --split ... --seed S``
does. Per split, on the same test compounds:

(a) ``type-only-same-compounds``: composition + space group model trained on the
    spectral models' own training compounds;
(b) ``type-only``: the catalogue prior, trained on every labelled catalogue entry except
    those sharing a reduced formula with any validation or test compound (the app's
    type-only kind);
(c) ``stacked``: prior + spectra, a CNN-sg that also receives (b)'s log-odds;
(d) ``cnn-sg-shuffled``: CNN-sg trained on spectra shuffled among the training (and
    validation) materials within each element: the control for "the spectra carry
    the signal"; tested on the real spectra;
and ``cnn-sg``. With ``--all-kinds-seeds`` the other kinds (cnn, cnn-sg-composition,
svm-sg, kmeans) are trained on those splits too.

Thresholds are chosen on each split's validation compounds (Youden's J); metrics are
reported at that threshold and at 0.5, with each subset's prevalence. Paired
differences (model − baseline) of topological F1 and ROC AUC use 1,000 paired
bootstrap resamples of the test compounds. Per split, a JSON file goes to
``bench/results/split_seedS.json``; the summary over splits (mean ± SD of each paired
difference, and in how many splits its 95 % interval excludes 0) to
``bench/results/summary.json``. ``--tune`` compares CNN schedules on the validation
compounds of the first seed (never on test) and prints the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scratch_db import recreate_database, server_urls  # noqa: E402

DATABASE = "screening_evaluate"
RESULTS = REPO / "bench" / "results"
#: (name, model, baseline): the paired comparisons reported for every split.
COMPARISONS = (
    ("what spectra add to the catalogue prior", "stacked", "type-only"),
    ("CNN-sg against composition + symmetry on the same compounds", "cnn-sg", "type-only-same-compounds"),
    ("CNN-sg against its shuffled-spectra control", "cnn-sg", "cnn-sg-shuffled"),
    ("catalogue prior against type-only on the same compounds", "type-only", "type-only-same-compounds"),
)
OTHER_KINDS = ("cnn", "cnn-sg-composition", "svm-sg", "kmeans")
TUNING_SCHEDULES = (
    {"epochs": 150, "batch_size": 32, "patience": 20},
    {"epochs": 60, "batch_size": 64, "patience": 10},
    {"epochs": 30, "batch_size": 256, "patience": 5},
)


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def setup_django(fresh: bool) -> None:
    admin_url, url = server_urls(DATABASE, "evaluate_bundled")
    if fresh:
        recreate_database(admin_url, DATABASE)
    else:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            recreate_database(admin_url, DATABASE)
    os.environ["DATABASE_URL"] = url
    os.environ["CELERY_BROKER_URL"] = ""  # everything in-process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    call_command("load_bundled", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115 - idempotent upsert
    print(f"# load_bundled: {time.perf_counter() - started:.0f} s", flush=True)


def shuffled_within_element(records, rng):
    """``records`` with each element's spectra permuted among the materials that have one."""
    from dataclasses import replace

    spectra = [list(material) for material in records.spectra]
    by_element: dict[str, list[tuple[int, int]]] = {}
    for row, material in enumerate(spectra):
        for position, spectrum in enumerate(material):
            by_element.setdefault(spectrum.element, []).append((row, position))
    originals = [list(material) for material in spectra]
    for slots in by_element.values():
        order = rng.permutation(len(slots))
        for (row, position), source in zip(slots, order):
            source_row, source_position = slots[source]
            spectra[row][position] = originals[source_row][source_position]
    return replace(records, spectra=spectra)


def per_element_table(records, probabilities, threshold) -> list[dict]:
    """Per element of the test compounds: the paper's per-class recall/precision/F1 and the
    fraction predicted correctly (the paper's k-means measure)."""
    from mlcore import evaluate

    rows = evaluate.per_element_metrics(records.element_sets(), records.labels, probabilities, threshold)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    correct = {}
    for element_set, label, guess in zip(records.element_sets(), records.labels, predicted):
        for element in element_set:
            correct.setdefault(element, []).append(int(label == guess))
    for row in rows:
        row["fraction_correct"] = float(np.mean(correct[row["element"]]))
    return rows


def evaluate_split(seed: int, kinds: tuple[str, ...], n_boot: int) -> dict:
    from materials.learning.training import (
        SplitRecords,
        catalogue_training_records,
        evaluation_metrics,
        get_or_create_split,
        split_records,
    )
    from mlcore import evaluate
    from mlcore.training import fit_model

    dataset = get_or_create_split(f"bundled-element-balanced-v2-seed{seed}", seed=seed)
    records = split_records(dataset)
    catalogue = catalogue_training_records(dataset)
    rng = np.random.default_rng(seed)
    shuffled = SplitRecords(
        train=shuffled_within_element(records.train, rng),
        validation=shuffled_within_element(records.validation, rng),
        test=records.test,
    )
    models, fitted_models, seconds = {}, {}, {}

    def run(name, kind, train_records, split, **options):
        started = time.perf_counter()
        fitted = fit_model(kind, train_records, split.validation, random_state=seed, **options)
        p_validation, p_test = fitted.predict_proba(split.validation), fitted.predict_proba(split.test)
        threshold = float(evaluate.choose_threshold(split.validation.labels, p_validation))
        metrics = evaluation_metrics(fitted, split, p_validation, p_test, threshold)
        metrics.pop("projection", None)
        metrics["test_per_element"] = per_element_table(split.test, p_test, threshold)
        seconds[name] = round(time.perf_counter() - started, 1)
        models[name], fitted_models[name] = metrics, fitted
        print(
            f"#   seed {seed} {name}: test topological F1 {metrics['test']['topological_f1']:.3f}, "
            f"ROC AUC {metrics['test']['roc_auc']:.3f} ({seconds[name]:.0f} s)",
            flush=True,
        )

    run("type-only", "type-only", catalogue, records)
    run("type-only-same-compounds", "type-only", records.train, records)
    run("stacked", "stacked", records.train, records, prior=fitted_models["type-only"].model)
    run("cnn-sg", "cnn-sg", records.train, records)
    run("cnn-sg-shuffled", "cnn-sg", shuffled.train, shuffled)
    for kind in kinds:
        run(kind, kind, records.train, records)

    comparisons = []
    for title, name, baseline in COMPARISONS:
        entry = {"comparison": title, "model": name, "baseline": baseline}
        for metric in ("topological_f1", "roc_auc"):
            entry[metric] = evaluate.paired_bootstrap_difference(
                records.test.labels,
                np.asarray(models[name]["test_predictions"]["probability"]),
                models[name]["threshold"],
                np.asarray(models[baseline]["test_predictions"]["probability"]),
                models[baseline]["threshold"],
                metric=metric,
                n_boot=n_boot,
                random_state=seed,
            )
        comparisons.append(entry)
    return {
        "seed": seed,
        "split": dataset.name,
        "split_hash": dataset.content_hash,
        "counts": dataset.counts,
        "n_catalogue_prior_training": len(catalogue),
        "models": models,
        "comparisons": comparisons,
        "fit_seconds": seconds,
    }


def tune(seed: int) -> list[dict]:
    """CNN-sg schedules compared on the validation compounds of one split (never test)."""
    from materials.learning.training import get_or_create_split, split_records
    from mlcore import evaluate
    from mlcore.training import fit_model

    records = split_records(get_or_create_split(f"bundled-element-balanced-v2-seed{seed}", seed=seed))
    rows = []
    for schedule in TUNING_SCHEDULES:
        fitted = fit_model("cnn-sg", records.train, records.validation, hyperparameters=schedule, random_state=seed)
        p_validation = fitted.predict_proba(records.validation)
        report = evaluate.classification_report(records.validation.labels, p_validation, 0.5)
        best_loss = min(row.get("val_loss", np.inf) for row in fitted.model.history_)
        rows.append({**schedule, "validation_loss": float(best_loss), "validation_roc_auc": report["roc_auc"]})
        print(f"# tune {schedule}: validation loss {best_loss:.4f}, ROC AUC {report['roc_auc']:.3f}", flush=True)
    return rows


def summarise(splits: list[dict]) -> dict:
    summary = []
    for title, name, baseline in COMPARISONS:
        entry = {"comparison": title, "model": name, "baseline": baseline, "n_splits": len(splits)}
        for metric in ("topological_f1", "roc_auc"):
            values = [
                next(c for c in s["comparisons"] if c["model"] == name and c["baseline"] == baseline)[metric]
                for s in splits
            ]
            differences = np.array([v["difference"] for v in values], dtype=float)
            entry[metric] = {
                "mean": float(np.nanmean(differences)),
                "sd": float(np.nanstd(differences, ddof=1)) if len(differences) > 1 else 0.0,
                "per_split": differences.tolist(),
                "ci_above_zero": int(sum(v["low"] is not None and v["low"] > 0 for v in values)),
                "ci_below_zero": int(sum(v["high"] is not None and v["high"] < 0 for v in values)),
            }
        summary.append(entry)
    absolute = {}
    for name in splits[0]["models"]:
        present = [s["models"][name] for s in splits if name in s["models"]]
        absolute[name] = {
            "n_splits": len(present),
            **{
                f"{metric}_{where}": {
                    "mean": float(np.mean([m[where][metric] for m in present])),
                    "sd": float(np.std([m[where][metric] for m in present], ddof=1)) if len(present) > 1 else 0.0,
                }
                for metric in ("topological_f1", "roc_auc", "topological_precision", "topological_recall")
                for where in ("test", "test_at_half")
            },
        }
    return {"comparisons": summary, "models": absolute, "finding": finding_sentence(summary)}


def finding_sentence(summary: list[dict]) -> str:
    """The one plain sentence on what spectra add (the compare page shows the same).

    A gain (or loss) is called consistent only when the paired 95 % interval excludes 0
    on the same side in most splits for both F1 and ROC AUC; a few splits with an
    interval clear of 0 (about 1 in 40 per side is expected by chance) make it "at most
    a small" difference.
    """
    stacked = next(c for c in summary if c["model"] == "stacked")
    f1, auc = stacked["topological_f1"], stacked["roc_auc"]
    n = stacked["n_splits"]
    above = min(f1["ci_above_zero"], auc["ci_above_zero"])
    below = min(f1["ci_below_zero"], auc["ci_below_zero"])
    any_above = f1["ci_above_zero"] + auc["ci_above_zero"]
    any_below = f1["ci_below_zero"] + auc["ci_below_zero"]
    noise = "which most splits cannot tell from noise"
    if above > n / 2 and not any_below:
        verdict = "spectra add a consistent gain over composition and space group"
    elif below > n / 2 and not any_above:
        verdict = "spectra make the answer consistently worse than composition and space group alone"
    elif any_above and not any_below and f1["mean"] > 0 and auc["mean"] > 0:
        verdict = f"spectra add at most a small gain over composition and space group, {noise}"
    elif any_below and not any_above and f1["mean"] < 0 and auc["mean"] < 0:
        verdict = f"spectra cost at most a little against composition and space group, {noise}"
    else:
        verdict = "spectra add nothing measurable to composition and space group"
    return (
        f"On this data, {verdict}: over {n} element-balanced splits, the stacked prior + spectra model minus the "
        f"catalogue prior is {f1['mean']:+.3f} ± {f1['sd']:.3f} in topological F1 and {auc['mean']:+.3f} ± "
        f"{auc['sd']:.3f} in ROC AUC (mean ± SD over splits), and its paired 95 % interval excludes 0 in "
        f"{f1['ci_above_zero'] + f1['ci_below_zero']} of {n} splits for F1 ({f1['ci_above_zero']} above) and "
        f"{auc['ci_above_zero'] + auc['ci_below_zero']} of {n} for ROC AUC ({auc['ci_above_zero']} above)."
    )


def provenance() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "mlcore", "materials", "data", "bench/evaluate_bundled.py"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", None
    from materials.learning.training import library_versions  # what every ModelVersion records

    return {"commit": commit, "uncommitted_changes": dirty, "library_versions": library_versions()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="split seeds, e.g. 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--all-kinds-seeds", default="0", help=f"seeds that also train {', '.join(OTHER_KINDS)}")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--fresh", action="store_true", help="recreate the scratch database (new data: new splits)")
    parser.add_argument("--tune", action="store_true", help="compare CNN schedules on validation first")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="print the tables of the stored results and exit")
    parser.add_argument(
        "--summarise-only", action="store_true", help="recompute summary.json from the stored split files (no training)"
    )
    args = parser.parse_args(argv)
    if args.report:
        return report(args.output_dir)
    if args.summarise_only:
        path = args.output_dir / "summary.json"
        stored = json.loads(path.read_text())
        splits = [json.loads((args.output_dir / f"split_seed{seed}.json").read_text()) for seed in stored["seeds"]]
        path.write_text(json.dumps({**stored, **summarise(splits)}, indent=1))
        print(summarise(splits)["finding"])
        return 0
    seeds = parse_seeds(args.seeds)
    all_kinds_seeds = set(parse_seeds(args.all_kinds_seeds)) if args.all_kinds_seeds else set()

    setup_django(args.fresh)
    from materials.models import Material

    usable = Material.objects.with_spectra().labelled()
    counts = {"compounds": usable.count(), "topological": usable.filter(label="topological").count()}
    print(f"# usable compounds: {counts['compounds']} ({counts['topological']} topological)", flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    meta = {**provenance(), "data": counts, "command": "bench/evaluate_bundled.py " + " ".join(argv or sys.argv[1:])}
    if args.tune:  # the schedules are compared on validation; mlcore.training.CNN_SCHEDULE records the choice
        (args.output_dir / "tuning.json").write_text(json.dumps({**meta, "schedules": tune(seeds[0])}, indent=1))
    splits = []
    for seed in seeds:
        result = evaluate_split(seed, OTHER_KINDS if seed in all_kinds_seeds else (), args.n_boot)
        (args.output_dir / f"split_seed{seed}.json").write_text(json.dumps({**meta, **result}, indent=1))
        splits.append(result)
        summary = summarise(splits)
        (args.output_dir / "summary.json").write_text(
            json.dumps({**meta, "seeds": seeds[: len(splits)], **summary}, indent=1)
        )
    print_tables(splits, summary)
    return 0


def print_tables(splits: list[dict], summary: dict) -> None:
    print(f"\n{len(splits)} splits; paired differences on each split's test compounds (1,000 bootstrap resamples)\n")
    print("| comparison | topological F1: mean ± SD | CI excl. 0 (above / below) | ROC AUC: mean ± SD | CI excl. 0 |")
    print("|---|---|---|---|---|")
    for entry in summary["comparisons"]:
        f1, auc = entry["topological_f1"], entry["roc_auc"]
        print(
            f"| {entry['model']} − {entry['baseline']} | {f1['mean']:+.3f} ± {f1['sd']:.3f} | "
            f"{f1['ci_above_zero']} / {f1['ci_below_zero']} | {auc['mean']:+.3f} ± {auc['sd']:.3f} | "
            f"{auc['ci_above_zero']} / {auc['ci_below_zero']} |"
        )
    print("\n| model | splits | topological F1 (validation threshold) | at 0.5 | ROC AUC |")
    print("|---|---|---|---|---|")
    for name, entry in summary["models"].items():
        print(
            f"| {name} | {entry['n_splits']} | {entry['topological_f1_test']['mean']:.3f} ± "
            f"{entry['topological_f1_test']['sd']:.3f} | {entry['topological_f1_test_at_half']['mean']:.3f} | "
            f"{entry['roc_auc_test']['mean']:.3f} ± {entry['roc_auc_test']['sd']:.3f} |"
        )
    print("\n" + summary["finding"])


def report(folder: Path) -> int:
    """Every table BENCHMARKS.md shows, from the stored result files (no training)."""
    summary = json.loads((folder / "summary.json").read_text())
    splits = [json.loads((folder / f"split_seed{seed}.json").read_text()) for seed in summary["seeds"]]
    print(f"# {summary['command']} at {summary['commit'][:12]}; data {summary['data']}")
    print("\n| seed | split hash | train / validation / test | test prevalence (topological) |")
    print("|---|---|---|---|")
    for split in splits:
        counts = split["counts"]
        prevalence = split["models"]["type-only"]["prevalence"]["test"]
        print(
            f"| {split['seed']} | `{split['split_hash'][:12]}` | {counts['train']} / {counts['validation']} / "
            f"{counts['test']} | {prevalence:.0%} |"
        )
    print("\n| seed | " + " | ".join(f"{c['model']} − {c['baseline']}" for c in summary["comparisons"]) + " |")
    print("|---" * (len(summary["comparisons"]) + 1) + "|")
    for split in splits:
        cells = []
        for entry in split["comparisons"]:
            f1, auc = entry["topological_f1"], entry["roc_auc"]
            cells.append(
                f"F1 {f1['difference']:+.3f} [{f1['low']:+.2f}, {f1['high']:+.2f}]; "
                f"AUC {auc['difference']:+.3f} [{auc['low']:+.2f}, {auc['high']:+.2f}]"
            )
        print(f"| {split['seed']} | " + " | ".join(cells) + " |")
    print_tables(splits, summary)
    first = splits[0]
    print(f"\nSeed {first['seed']}, every kind, test compounds (validation threshold; at 0.5 in brackets):\n")
    print("| model | topological recall | precision | F1 | trivial F1 | ROC AUC | threshold |")
    print("|---|---|---|---|---|---|---|")
    for name, metrics in first["models"].items():
        test, half, ci = metrics["test"], metrics["test_at_half"], metrics["test_ci"]
        print(
            f"| {name} | {test['topological_recall']:.2f} ({half['topological_recall']:.2f}) | "
            f"{test['topological_precision']:.2f} ({half['topological_precision']:.2f}) | "
            f"{test['topological_f1']:.2f} [{ci['topological_f1']['low']:.2f}, {ci['topological_f1']['high']:.2f}] "
            f"({half['topological_f1']:.2f}) | {test['trivial_f1']:.2f} ({half['trivial_f1']:.2f}) | "
            f"{test['roc_auc']:.2f} | {metrics['threshold']:.3f} |"
        )
    shown = [name for name in ("type-only", "stacked", "cnn-sg", "kmeans") if name in first["models"]]
    rows = {
        name: {(r["element"], r["target_class"]): r for r in first["models"][name]["test_per_element"]}
        for name in shown
    }
    elements = sorted(
        {e for (e, c), r in rows[shown[0]].items() if c == "topological"},
        key=lambda e: -sum(rows[shown[0]][(e, c)]["support"] for c in ("topological", "trivial")),
    )
    print(f"\nPer element, seed {first['seed']} test compounds with at least 5 of the element (paper Fig. 3):")
    print("topological recall / precision / F1 per model; k-means: fraction predicted correctly\n")
    print("| element | n (topological) | " + " | ".join(shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for element in elements:
        top, triv = rows[shown[0]][(element, "topological")], rows[shown[0]][(element, "trivial")]
        if top["support"] + triv["support"] < 5:
            continue
        cells = []
        for name in shown:
            row = rows[name][(element, "topological")]
            if name == "kmeans":
                cells.append(f"{row['fraction_correct']:.2f} correct")
            else:
                cells.append(
                    "/".join("–" if row[k] is None else f"{row[k]:.2f}" for k in ("recall", "precision", "f1"))
                )
        print(f"| {element} | {top['support'] + triv['support']} ({top['support']}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
