"""Does ``make demo`` store the benchmark's models? Compare a demo database with ``bench/results/``.

Usage (after ``manage.py demo`` on the database that ``DATABASE_URL`` names)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/screening_demo .venv/bin/python bench/demo_vs_benchmark.py

For every model kind the demo trained on the default split (``bundled-element-balanced-v2-seed0``),
the latest ready version's test metrics are compared with the same kind in
``bench/results/split_seed0.json`` (``bench/evaluate_bundled.py``): same split hash, threshold,
topological F1 and ROC AUC. Prints ``name: value unit`` lines and exits 1 on a mismatch, so
/models/compare/ can be trusted to show the numbers BENCHMARKS.md reports for that split.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "screening.settings")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOLERANCE = 1e-6
COMPARED = ("threshold", "topological_f1", "roc_auc")


def main() -> int:
    import django

    django.setup()
    from materials.models import ModelVersion

    results = json.loads((REPO / "bench" / "results" / "split_seed0.json").read_text())
    worst, compared, problems = 0.0, 0, []
    for kind, expected in results["models"].items():
        version = (
            ModelVersion.objects.filter(kind=kind, status="ready", dataset__name=results["split"])
            .order_by("-pk")
            .first()
        )
        if version is None:
            if kind in {"type-only-same-compounds", "cnn-sg-shuffled"}:
                continue  # benchmark-only baselines; the demo does not train them
            problems.append(f"{kind}: the demo stored no ready version on {results['split']}")
            continue
        if version.split_hash != results["split_hash"]:
            problems.append(f"{kind}: split hash {version.split_hash[:12]} != {results['split_hash'][:12]}")
        stored = {**version.metrics["test"], "threshold": version.threshold}
        wanted = {**expected["test"], "threshold": expected["threshold"]}
        for name in COMPARED:
            difference = abs(float(stored[name]) - float(wanted[name]))
            worst = max(worst, difference)
            compared += 1
            print(f"demo_vs_bench_{kind}_{name}: {float(stored[name]):.4f} (bench {float(wanted[name]):.4f})")
            if difference > TOLERANCE:
                problems.append(f"{kind} {name}: demo {stored[name]:.4f}, bench {wanted[name]:.4f}")
    print(f"demo_vs_bench_values_compared: {compared} values")
    print(f"demo_vs_bench_max_abs_difference: {worst:.2e} (absolute)")
    for problem in problems:
        print(f"MISMATCH {problem}")
    return 1 if problems or compared == 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
