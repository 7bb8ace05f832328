"""Same material, same answer? P(topological) across spectrum sources, and calibration on test.

Usage::

    .venv/bin/python bench/cross_source.py --fresh --seeds 0-2

For each seed S, on the stored split ``bundled-element-balanced-v2-seedS`` of a scratch
PostgreSQL database ``screening_cross_source`` loaded with ``load_bundled`` (the split
``bench/evaluate_bundled.py`` uses), every model kind that reads spectra is trained with
``mlcore.training.fit_model`` (as ``manage.py train`` does), its decision rule is fitted on
the validation compounds (``mlcore.decision.fit_decision_rule``: Platt calibrator, abstain
band for >= 90 % precision), and then:

* **cross-source**: one material, one absorbing element, the spectrum from each source, the
  rest of the input (formula, space group) the same:

  - LiCoO2 (mp-24850, R-3m) Co K: the Materials Project's spectrum
    (``data/reference/licoo2_co_k_mp.json``), and FEFF10 of the same structure at the
    ``fast`` and ``mp`` presets (``bench/cross_source_spectra.py``);
  - anatase TiO2 (I4_1/amd) Ti K: a measured spectrum (``data/measured``), FEFF at MP's
    settings on MP's grid (``data/reference/anatase_ti_k_feff_mp.txt``, Lightshow), and
    FEFF10 ``fast`` / ``mp`` of mp-390.

  Reported per model: calibrated and raw P for each source, max |dP| over the sources'
  pairs, and each source's decision with its reasons.
* **calibration on test**: ECE before and after calibration, the band, the abstention rate
  and each decided class's precision on the test compounds (never used to fit anything).

Output: ``bench/results/cross_source_seedS.json`` per seed and a line per model on stdout. Fitted
models are kept in ``var/cross_source/seedS/<kind>/`` (pickle-free) and reused by a later run, so
that reference spectra computed later are scored by the same models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scratch_db import recreate_database, server_urls  # noqa: E402

DATABASE = "screening_cross_source"
RESULTS = REPO / "bench" / "results"
CACHE = REPO / "var" / "cross_source"
#: "" for the default preprocessing; "v1" when run with --preprocessing-version 1 (the comparison).
PREFIX = ""
DATA = REPO / "data"
KINDS = ("cnn-sg", "cnn-sg-composition", "stacked", "svm-sg")
MATERIALS = {
    "LiCoO2": {"element": "Co", "space_group": 166, "composition": {"Li": 1.0, "Co": 1.0, "O": 2.0}},
    "anatase TiO2": {"element": "Ti", "space_group": 141, "composition": {"Ti": 1.0, "O": 2.0}},
}
#: The other elements' FEFF ``fast`` spectra (``bench/cross_source_spectra.py --others``): with them
#: each material is also classified with complete spectra, only the varied element's source changing.
OTHERS = {"LiCoO2": ("feff_licoo2", ("Li", "O")), "anatase TiO2": ("feff_anatase", ("O",))}


def other_spectra(material: str):
    from mlcore.data import RawSpectrum

    stem, elements = OTHERS[material]
    found = []
    for element in elements:
        path = DATA / "reference" / f"{stem}_{element.lower()}_k_fast.json"
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        found.append(RawSpectrum(element, np.asarray(record["energies_ev"]), np.asarray(record["mu"])))
    return found


def sources() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per material: source name -> (energies eV, mu), every file that exists."""
    found: dict[str, dict] = {name: {} for name in MATERIALS}
    mp = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    found["LiCoO2"]["Materials Project"] = (np.asarray(mp["energies_ev"]), np.asarray(mp["mu"]))
    measured = np.loadtxt(DATA / "measured" / "anatase_ti_k_measured.txt")
    measured = measured[np.argsort(measured[:, 0], kind="stable")]  # digitised: 3 points out of order
    found["anatase TiO2"]["measured"] = (measured[:, 0], measured[:, 1])
    lightshow = np.loadtxt(DATA / "reference" / "anatase_ti_k_feff_mp.txt")
    found["anatase TiO2"]["FEFF, MP settings (Lightshow)"] = (lightshow[:, 0], lightshow[:, 1])
    for material, stem in (("LiCoO2", "feff_licoo2_co_k"), ("anatase TiO2", "feff_anatase_ti_k")):
        for preset in ("fast", "mp"):
            path = DATA / "reference" / f"{stem}_{preset}.json"
            if path.exists():
                record = json.loads(path.read_text())
                found[material][f"FEFF10 {preset}"] = (np.asarray(record["energies_ev"]), np.asarray(record["mu"]))
    return found


def setup_django(fresh: bool) -> None:
    admin_url, url = server_urls(DATABASE, "cross_source")
    if fresh:
        recreate_database(admin_url, DATABASE)
    os.environ["DATABASE_URL"] = url
    os.environ["CELERY_BROKER_URL"] = ""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("load_bundled", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115 - idempotent


def one_material(material: str, energies, mu, complete: bool = False):
    from materials.learning.arrays import MaterialRecords
    from mlcore.data import RawSpectrum

    spec = MATERIALS[material]
    spectra = [RawSpectrum(spec["element"], np.asarray(energies, float), np.asarray(mu, float))]
    if complete:
        spectra = sorted(spectra + other_spectra(material), key=lambda s: s.element)
    return MaterialRecords(
        material_ids=np.array([0]),
        spectra=[spectra],
        space_groups=np.array([spec["space_group"]]),
        compositions=[dict(spec["composition"])],
        labels=np.array([0]),
    )


def cached_fit(seed: int, kind: str, records, prior):
    """Fit ``kind`` on the split, or load the fit a previous run saved under ``var/cross_source``
    (models are saved pickle-free: ``model.save`` and the preprocessor's JSON state), so that new
    reference spectra can be scored without retraining."""
    from mlcore.models import MODEL_KINDS
    from mlcore.preprocess import SpectrumPreprocessor
    from mlcore.training import FittedModel, fit_model

    folder = CACHE / PREFIX / f"seed{seed}" / kind if PREFIX else CACHE / f"seed{seed}" / kind
    if (folder / "model.zip").exists():
        model = MODEL_KINDS[kind].load(folder / "model.zip")
        state = folder / "preprocessor.json"
        preprocessor = SpectrumPreprocessor.load(state) if state.exists() else None
        return FittedModel(kind=kind, model=model, preprocessor=preprocessor, n_train=len(records.train.labels))
    fitted = fit_model(
        kind, records.train, records.validation, random_state=seed, prior=prior.model if kind == "stacked" else None
    )
    folder.mkdir(parents=True, exist_ok=True)
    fitted.model.save(folder / "model.zip")
    if fitted.preprocessor is not None:
        fitted.preprocessor.save(folder / "preprocessor.json")
    return fitted


def evaluate_seed(seed: int, kinds: tuple[str, ...]) -> dict:
    from materials.learning.decisions import check_inputs, decide_one
    from materials.learning.training import catalogue_training_records, get_or_create_split, split_records
    from mlcore import evaluate
    from mlcore.decision import fit_decision_rule
    from mlcore.training import fit_model  # the prior; the models go through cached_fit

    dataset = get_or_create_split(f"bundled-element-balanced-v2-seed{seed}", seed=seed)
    records = split_records(dataset)
    prior = fit_model("type-only", catalogue_training_records(dataset), records.validation, random_state=seed)
    spectra = sources()
    out = {"seed": seed, "split": dataset.name, "split_hash": dataset.content_hash, "models": {}}
    in_training = {
        name: [
            f"{sorted(c)}"
            for c, sg in zip(records.train.compositions, records.train.space_groups, strict=True)
            if set(c) == set(spec["composition"]) and int(sg) == spec["space_group"]
        ]
        for name, spec in MATERIALS.items()
    }
    out["same_compound_in_training"] = {name: bool(rows) for name, rows in in_training.items()}
    for kind in kinds:
        started = time.perf_counter()
        fitted = cached_fit(seed, kind, records, prior)
        p_validation, p_test = fitted.predict_proba(records.validation), fitted.predict_proba(records.test)
        threshold = float(evaluate.choose_threshold(records.validation.labels, p_validation))
        rule = fit_decision_rule(records.validation.labels, p_validation, records.test.labels, p_test, threshold)
        report = {
            key: rule.report[key]
            for key in ("ece_test_before", "ece_test_after", "ece_validation_before", "ece_validation_after")
        }
        report["band"] = {"low": rule.band.low, "high": rule.band.high}
        report["method"] = rule.calibrator.method
        report["band_validation"] = rule.report["band_validation"]
        report["band_test"] = rule.report["band_test"]
        report["roc_auc_test"] = float(
            evaluate.classification_report(records.test.labels, p_test, threshold)["roc_auc"]
        )
        cross = {}
        inputs = [(material, False) for material in spectra]
        inputs += [(material, True) for material in spectra if other_spectra(material) is not None]
        for material, complete in inputs:
            by_source = spectra[material]
            rows = {}
            for source, (energies, mu) in by_source.items():
                single = one_material(material, energies, mu, complete)
                try:
                    raw = float(fitted.predict_proba(single)[0])
                except ValueError as error:
                    rows[source] = {"error": str(error)}
                    continue
                checked = check_inputs(
                    kind, fitted.preprocessor, single.spectra[0], sorted(MATERIALS[material]["composition"])
                )
                decided = decide_one(rule, raw, checked)
                rows[source] = {
                    "raw_probability": raw,
                    "probability": decided.probability,
                    "decision": decided.decision,
                    "reasons": [reason.code for reason in decided.reasons],
                }
            calibrated = [row["probability"] for row in rows.values() if "probability" in row]
            raw_values = [row["raw_probability"] for row in rows.values() if "raw_probability" in row]
            cross[f"{material}, complete" if complete else material] = {
                "sources": rows,
                "max_abs_dp": float(np.ptp(calibrated)) if len(calibrated) > 1 else None,
                "max_abs_dp_raw": float(np.ptp(raw_values)) if len(raw_values) > 1 else None,
            }
        report["cross_source"] = cross
        report["fit_seconds"] = round(time.perf_counter() - started, 1)
        out["models"][kind] = report
        print(
            f"# seed {seed} {kind}: ECE test {report['ece_test_before']:.3f} -> {report['ece_test_after']:.3f}, "
            f"abstain {report['band_test']['abstention_rate']:.0%}; "
            + "; ".join(f"{m} |dP| {c['max_abs_dp']:.3f}" for m, c in cross.items() if c["max_abs_dp"] is not None),
            flush=True,
        )
    return out


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary(seeds: list[int]) -> str:
    """Markdown tables (BENCHMARKS.md) from the stored per-seed results."""
    stem = f"cross_source_{PREFIX}_seed" if PREFIX else "cross_source_seed"
    results = [json.loads((RESULTS / f"{stem}{seed}.json").read_text()) for seed in seeds]
    kinds = list(results[0]["models"])
    lines = [
        "| model | seed | ECE test raw → calibrated | calibrator | band (low, high) | abstain (test) "
        "| precision topological / trivial (test, decided) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        for result in results:
            m = result["models"][kind]
            band, test = m["band"], m["band_test"]
            method = m.get("method") or ("platt" if m["ece_test_after"] != m["ece_test_before"] else "identity")
            lines.append(
                f"| {kind} | {result['seed']} | {_fmt(m['ece_test_before'])} → {_fmt(m['ece_test_after'])} | {method} "
                f"| {_fmt(band['low'], 2)}, {_fmt(band['high'], 2)} | {test['abstention_rate']:.0%} "
                f"({test['n'] - test['n_topological'] - test['n_trivial']}/{test['n']}) "
                f"| {_fmt(test['precision_topological'], 2)} ({test['n_topological']}) / "
                f"{_fmt(test['precision_trivial'], 2)} ({test['n_trivial']}) |"
            )
    seeds_text = ", ".join(str(r["seed"]) for r in results)
    lines += [
        "",
        f"| model | input | max \\|ΔP\\| over sources, seeds {seeds_text} | calibrated P, all sources and seeds "
        "| decisions, all sources and seeds |",
        "|---|---|---|---|---|",
    ]
    for kind in kinds:
        for material in results[0]["models"][kind]["cross_source"]:
            crosses = [r["models"][kind]["cross_source"][material] for r in results]
            ps = [row["probability"] for c in crosses for row in c["sources"].values() if "probability" in row]
            counts: dict[str, int] = {}
            for c in crosses:
                for row in c["sources"].values():
                    counts[row.get("decision", "error")] = counts.get(row.get("decision", "error"), 0) + 1
            dps = " / ".join(_fmt(c["max_abs_dp"]) for c in crosses)
            decided = ", ".join(f"{n} {key}" for key, n in sorted(counts.items()))
            lines.append(f"| {kind} | {material} | {dps} | {_fmt(min(ps), 2)}–{_fmt(max(ps), 2)} | {decided} |")
    lines += [
        "",
        "| model | seed | material (input) | calibrated P per source | max \\|ΔP\\| | decisions |",
        "|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        for result in results:
            for material, cross in result["models"][kind]["cross_source"].items():
                rows = cross["sources"]
                ps = ", ".join(f"{source} {_fmt(row.get('probability'))}" for source, row in rows.items())
                decisions = ", ".join(
                    f"{row.get('decision', 'error')}" + (f" ({'+'.join(row['reasons'])})" if row.get("reasons") else "")
                    for row in rows.values()
                )
                lines.append(
                    f"| {kind} | {result['seed']} | {material} | {ps} | {_fmt(cross['max_abs_dp'])} | {decisions} |"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="e.g. 0-2 or 0,3")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--fresh", action="store_true", help="recreate the scratch database first")
    parser.add_argument("--summary", action="store_true", help="print the tables of stored results, run nothing")
    parser.add_argument(
        "--preprocessing-version",
        type=int,
        default=2,
        help="1: train and score with the old preprocessing (absolute energies, raw mu), for comparison",
    )
    args = parser.parse_args(argv)
    global PREFIX
    if args.preprocessing_version != 2:
        import functools

        import mlcore.training
        from mlcore.preprocess import SpectrumPreprocessor

        PREFIX = f"v{args.preprocessing_version}"
        # fit_model builds its preprocessor with SpectrumPreprocessor(): the same code at another version
        mlcore.training.SpectrumPreprocessor = functools.partial(
            SpectrumPreprocessor, version=args.preprocessing_version
        )
    seeds = []
    for part in args.seeds.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    if args.summary:
        PREFIX = f"v{args.preprocessing_version}" if args.preprocessing_version != 2 else ""
        print(summary(seeds))
        return 0
    setup_django(args.fresh)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        result = evaluate_seed(seed, tuple(args.kinds.split(",")))
        name = f"cross_source_{PREFIX}_seed{seed}.json" if PREFIX else f"cross_source_seed{seed}.json"
        result["preprocessing_version"] = args.preprocessing_version
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
