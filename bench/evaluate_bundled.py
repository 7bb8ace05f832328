"""Evaluate every model kind on the bundled FEFF spectra (no Django).

Usage: python bench/evaluate_bundled.py [--seed 0] [--n-boot 1000] [--output results.json]

Data: data/spectra/spectra*.jsonl (the head start and the extension; one FEFF K-edge
spectrum per compound and element, the ``fast`` preset throughout).
A compound is used when it is *complete*: every element of its reduced formula has a
spectrum. Labels: TI, TCI, HSP_SM, HSL_SM -> topological (1); Triv_Ins -> trivial (0).

Protocol (the paper's, at this small scale):
1. element-balanced split of the complete compounds (20 % test, 10 % validation);
2. SpectrumPreprocessor fitted on the training compounds only; +-1 eV shift
   augmentation (x3) of the training set for the CNNs;
3. sample weights from the training compounds (class x rarest element);
4. cnn-sg, cnn, cnn-sg-composition, svm-sg, kmeans trained on the training compounds;
   type-only trained on every labelled Materiae entry except the compounds in this
   split's validation and test sets (matched by Materiae id, and by formula + space
   group), so it sees far more materials than the spectral models;
5. each model's threshold maximizes Youden's J on the validation compounds; test
   metrics with 95 % percentile bootstrap intervals (same resamples for all models).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pymatgen.core import Composition  # noqa: E402

from mlcore.data import MaterialSpectra, RawSpectrum, composition_matrix  # noqa: E402
from mlcore.elements import K_EDGE_ENERGY_EV  # noqa: E402
from mlcore.evaluate import choose_threshold, compare_models, paired_bootstrap_difference  # noqa: E402
from mlcore.models import make_model  # noqa: E402
from mlcore.preprocess import SpectrumPreprocessor, edge_energy_ev  # noqa: E402
from mlcore.split import element_balanced_split  # noqa: E402
from mlcore.weights import sample_weights  # noqa: E402

DATA = REPO / "data"
TOPOLOGICAL_CLASSES = {"TI", "TCI", "HSP_SM", "HSL_SM"}
TRIVIAL_CLASS = "Triv_Ins"
SPECTRAL_KINDS = ("cnn-sg", "cnn", "cnn-sg-composition", "svm-sg", "kmeans")
# The bundled set has ~200 training compounds, so the CNNs take small batches and
# more epochs than the paper-scale defaults; early stopping picks the epoch.
CNN_SETTINGS = {"epochs": 150, "batch_size": 32, "patience": 20}
REPORTED = ("topological_recall", "topological_precision", "topological_f1", "trivial_f1", "roc_auc")


def label_of(soc_topo_class: str) -> int | None:
    if soc_topo_class in TOPOLOGICAL_CLASSES:
        return 1
    return 0 if soc_topo_class == TRIVIAL_CLASS else None


def amounts(formula: str) -> dict[str, float]:
    return {str(element): float(amount) for element, amount in Composition(formula).get_el_amt_dict().items()}


def load_complete_compounds() -> list[dict]:
    """Compounds whose every formula element has a spectrum, with their spectra and labels."""
    compounds: dict[int, dict] = {}
    lines = [
        line for path in sorted((DATA / "spectra").glob("spectra*.jsonl")) for line in path.read_text().splitlines()
    ]
    for line in lines:
        record = json.loads(line)
        compound = compounds.setdefault(
            record["amcsd_id"],
            {
                "key": record["amcsd_id"],
                "materiae_id": record["materiae_id"],
                "formula": record["reduced_formula"],
                "space_group": int(record["spacegroup"]),
                "label": label_of(record["soc_topo_class"]),
                "spectra": {},
            },
        )
        compound["spectra"][record["element"]] = RawSpectrum(
            record["element"], np.asarray(record["energies_ev"]), np.asarray(record["mu"])
        )
    complete = []
    for compound in compounds.values():
        composition = amounts(compound["formula"])
        if compound["label"] is None or set(composition) - set(compound["spectra"]):
            continue
        # Keep only the formula's elements (drops e.g. a stray "Nh" site label).
        compound["spectra"] = [compound["spectra"][element] for element in sorted(composition)]
        compound["composition"] = composition
        complete.append(compound)
    return complete


def align_edges(compounds: list[dict]) -> None:
    """Shift each spectrum so its edge sits at the element's tabulated K-edge energy.

    The reference is a table value, not fitted on any split, so nothing leaks from the
    test compounds; what is lost is each compound's chemical shift of the edge.
    """
    for compound in compounds:
        compound["spectra"] = [
            RawSpectrum(
                spectrum.element,
                spectrum.energies_ev
                - (edge_energy_ev(spectrum.energies_ev, spectrum.mu) - K_EDGE_ENERGY_EV[spectrum.element]),
                spectrum.mu,
            )
            for spectrum in compound["spectra"]
        ]


def load_materiae(excluded_ids: set[str], excluded_pairs: set[tuple[str, int]]) -> tuple[MaterialSpectra, np.ndarray]:
    """Every labelled Materiae entry not excluded, as a spectra-free MaterialSpectra."""
    compositions, space_groups, labels = [], [], []
    skipped = 0
    with open(DATA / "labels" / "materiae_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            label = label_of(row["soc_topo_class"])
            if label is None or row["materiae_id"] in excluded_ids:
                continue
            try:
                composition = amounts(row["formula"])
                reduced = Composition(row["formula"]).reduced_formula
                composition_matrix([composition])  # rejects elements beyond Pu
            except (ValueError, KeyError):
                skipped += 1
                continue
            if (reduced, int(row["spacegroup"])) in excluded_pairs:
                continue
            compositions.append(composition)
            space_groups.append(int(row["spacegroup"]))
            labels.append(label)
    print(f"# type-only training set: {len(labels)} Materiae entries ({sum(labels)} topological); "
          f"{skipped} unparsable formulas skipped")  # fmt: skip
    return spectra_free(compositions, space_groups), np.asarray(labels)


def spectra_free(compositions: list[dict[str, float]], space_groups: list[int]) -> MaterialSpectra:
    return MaterialSpectra(
        material_index=np.zeros(0, dtype=np.int64),
        element_index=np.zeros(0, dtype=np.int64),
        spectra=np.zeros((0, 200), dtype=np.float32),
        space_group=np.asarray(space_groups),
        composition=composition_matrix(compositions),
    )


def main() -> None:
    # pymatgen warns about missing electronegativities of noble gases in a few Materiae formulas.
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="split and model seed")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--output", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--align-edges",
        action="store_true",
        help="experiment: shift every spectrum so its edge (steepest rise) sits at the tabulated K edge",
    )
    args = parser.parse_args()

    compounds = load_complete_compounds()
    if args.align_edges:
        align_edges(compounds)
        print("# edges aligned: every spectrum shifted so its steepest rise sits at the tabulated K edge")
    y = np.array([c["label"] for c in compounds])
    element_sets = [set(c["composition"]) for c in compounds]
    print(f"# complete compounds: {len(compounds)} ({int(y.sum())} topological, {int((1 - y).sum())} trivial)")
    split = element_balanced_split(element_sets, y, random_state=args.seed, keys=[c["key"] for c in compounds])
    rows = {subset: split.rows(subset) for subset in ("train", "validation", "test")}
    print("# split " + ", ".join(f"{s}: {len(r)} ({int(y[r].sum())} topological)" for s, r in rows.items())
          + f"; content hash {split.content_hash[:12]}")  # fmt: skip

    def pick(subset: str, field: str) -> list:
        return [compounds[i][field] for i in rows[subset]]

    preprocessor = SpectrumPreprocessor().fit(pick("train", "spectra"))
    parts = {
        s: preprocessor.transform(pick(s, "spectra"), pick(s, "space_group"), pick(s, "composition")) for s in rows
    }
    augmented, source_rows = preprocessor.shift_augment(
        pick("train", "spectra"), pick("train", "space_group"), pick("train", "composition")
    )
    y_train, y_validation, y_test = (y[rows[s]] for s in ("train", "validation", "test"))
    weights = sample_weights([element_sets[i] for i in rows["train"]], y_train)

    probabilities, thresholds, timings = {}, {}, {}
    for kind in SPECTRAL_KINDS:
        start = time.perf_counter()
        if kind.startswith("cnn"):
            model = make_model(kind, random_state=args.seed, **CNN_SETTINGS)
            model.fit(augmented, y_train[source_rows], sample_weight=weights[source_rows],
                      validation_data=(parts["validation"], y_validation))  # fmt: skip
        else:
            model = make_model(kind, random_state=args.seed)
            model.fit(
                parts["train"], y_train, sample_weight=weights, validation_data=(parts["validation"], y_validation)
            )
        thresholds[kind] = choose_threshold(y_validation, model.predict_proba(parts["validation"]))
        probabilities[kind] = model.predict_proba(parts["test"])
        timings[kind] = time.perf_counter() - start

    held_out = np.concatenate([rows["validation"], rows["test"]])
    excluded_ids = {compounds[i]["materiae_id"] for i in held_out}
    excluded_pairs = {
        (Composition(compounds[i]["formula"]).reduced_formula, compounds[i]["space_group"]) for i in held_out
    }
    X_materiae, y_materiae = load_materiae(excluded_ids, excluded_pairs)
    start = time.perf_counter()
    type_only = make_model("type-only", random_state=args.seed).fit(
        X_materiae, y_materiae, sample_weight=sample_weights(
            [set(np.flatnonzero(row)) for row in X_materiae.composition], y_materiae
        )
    )  # fmt: skip
    validation_free = spectra_free(pick("validation", "composition"), pick("validation", "space_group"))
    test_free = spectra_free(pick("test", "composition"), pick("test", "space_group"))
    thresholds["type-only"] = choose_threshold(y_validation, type_only.predict_proba(validation_free))
    probabilities["type-only"] = type_only.predict_proba(test_free)
    timings["type-only"] = time.perf_counter() - start

    results = compare_models(y_test, probabilities, thresholds, n_boot=args.n_boot, random_state=args.seed)
    print(f"\n{len(y_test)} test compounds ({int(y_test.sum())} topological); 95 % bootstrap CIs ({args.n_boot})\n")
    print("| model | " + " | ".join(REPORTED) + " | threshold | fit s |")
    print("|---" * (len(REPORTED) + 3) + "|")
    for row in results:
        cells = []
        for name in REPORTED:
            metric = row["metrics"][name]
            cells.append(
                "n/a"
                if metric["value"] is None
                else f"{metric['value']:.2f} [{metric['low']:.2f}, {metric['high']:.2f}]"
            )
        print(f"| {row['model']} | " + " | ".join(cells) + f" | {row['threshold']:.3f} | {timings[row['model']]:.0f} |")
    # What the spectra add beyond composition and symmetry: paired differences against
    # the type-only baseline on the same test compounds and resamples.
    gains = {}
    print("\n| model − type-only | topological F1 difference [95 % CI] | trivial F1 difference [95 % CI] |")
    print("|---|---|---|")
    for name in probabilities:
        if name == "type-only":
            continue
        pair = [
            paired_bootstrap_difference(
                y_test,
                probabilities[name],
                thresholds[name],
                probabilities["type-only"],
                thresholds["type-only"],
                metric=metric,
                n_boot=args.n_boot,
                random_state=args.seed,
            )
            for metric in ("topological_f1", "trivial_f1")
        ]
        gains[name] = pair
        print(
            f"| {name} | "
            + " | ".join(f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" for d in pair)
            + " |"
        )
    if args.output:
        payload = {
            "gains_over_type_only": gains,
            "seed": args.seed,
            "split_hash": split.content_hash,
            "n": {s: int(len(r)) for s, r in rows.items()},
            "results": results,
            "fit_seconds": timings,
        }
        args.output.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
