"""Benchmark the spectral CNN at the paper's scale on synthetic data (no Django).

Usage: python bench/bench_mlcore.py [--quick] [--dense-fraction F]

Scale: 16,458 materials x 3 (shift augmentation) = 49,374 training materials,
81 absorbing elements, about 3 spectra of 200 points per material, 19 % topological
(mlcore.synthetic). Each training measurement runs in a fresh child process so
that its peak RSS is its own. Epoch time is the second epoch of a 2-epoch fit, so
one-off graph tracing is excluded. Prints one line per figure: ``name: value unit``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAPER_TRAINING_MATERIALS = 16458 * 3
QUICK_TRAINING_MATERIALS = 3000


def train_and_time(n_materials: int, formulation: str, measure_inference: bool) -> dict:
    """Child process body: generate data, train 2 epochs, time the second, optionally time inference."""
    from mlcore.models import make_model
    from mlcore.synthetic import make_synthetic_dataset

    X, y = make_synthetic_dataset(n_materials=n_materials, n_elements=81, signal_strength=0.5, random_state=0)
    model = make_model("cnn-sg", epochs=2, formulation=formulation, random_state=0)
    # Wall and CPU clocks (CPU time of all the process's threads, robust to other load).
    epoch_ends = [(time.perf_counter(), time.process_time())]
    model.fit(X, y, progress_callback=lambda *_: epoch_ends.append((time.perf_counter(), time.process_time())))
    result = {
        "first_epoch_seconds": epoch_ends[1][0] - epoch_ends[0][0],
        "epoch_seconds": epoch_ends[2][0] - epoch_ends[1][0],
        "epoch_cpu_seconds": epoch_ends[2][1] - epoch_ends[1][1],
        "n_materials": X.n_materials,
        "n_spectra": int(X.spectra.shape[0]),
        "n_channels": len(model.elements_),
    }
    if measure_inference:
        model.predict_proba(X.subset(range(model.predict_batch_size)))  # trace the inference graph once
        start, start_cpu = time.perf_counter(), time.process_time()
        model.predict_proba(X)
        result["inference_materials_per_second"] = X.n_materials / (time.perf_counter() - start)
        result["inference_materials_per_cpu_second"] = X.n_materials / (time.process_time() - start_cpu)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(n_materials: int, formulation: str, measure_inference: bool) -> dict:
    command = [sys.executable, __file__, "--child", formulation, str(n_materials)]
    if measure_inference:
        command.append("--inference")
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRAINING_MATERIALS} materials, a smoke test")
    parser.add_argument(
        "--dense-fraction",
        type=float,
        default=1.0,
        help="train the dense formulation on this fraction of the data and scale its epoch time linearly",
    )
    parser.add_argument("--child", nargs=2, metavar=("FORMULATION", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--inference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_and_time(int(args.child[1]), args.child[0], args.inference)))
        return

    n_materials = QUICK_TRAINING_MATERIALS if args.quick else PAPER_TRAINING_MATERIALS
    print(f"# {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f} (other work slows wall times)")
    print(f"# synthetic: {n_materials} training materials, 81 elements, ~3 spectra x 200 points each, cnn-sg defaults")
    sparse = run_child(n_materials, "sparse", measure_inference=True)
    # The first child waited for, so RUSAGE_CHILDREN's maximum is this child's peak.
    sparse_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n_dense = max(int(round(n_materials * args.dense_fraction)), 1)
    dense = run_child(n_dense, "dense", measure_inference=False)
    dense_epoch_seconds = dense["epoch_seconds"] * n_materials / n_dense
    scaled = "" if n_dense == n_materials else f", extrapolated linearly from {n_dense} materials"
    print(f"# sparse: {sparse['n_spectra']} spectra in {sparse['n_channels']} channels; epoch 1 incl. tracing "
          f"{sparse['first_epoch_seconds']:.2f} s")  # fmt: skip
    print(f"train_epoch_seconds_dense: {dense_epoch_seconds:.2f} s  # {n_materials} materials{scaled}")
    print(f"train_epoch_seconds_cnn_sg: {sparse['epoch_seconds']:.2f} s  # {n_materials} materials")
    print(f"ratio_dense_over_cnn_sg: {dense_epoch_seconds / sparse['epoch_seconds']:.1f} x")
    print(f"train_peak_rss_mb_cnn_sg: {sparse_rss_mb:.0f} MB  # whole child: data generation + 2 epochs + inference")
    print(f"train_peak_rss_mb_dense: {dense['peak_rss_mb']:.0f} MB  # dense batches built on the fly, not stored")
    print(f"inference_materials_per_second: {sparse['inference_materials_per_second']:.0f} materials/s")
    # CPU-time figures: an idle machine's wall time per epoch is at most the CPU time
    # (TensorFlow runs >= 1 thread), so these bound the wall figures when others share the CPUs.
    print(f"train_epoch_cpu_seconds_cnn_sg: {sparse['epoch_cpu_seconds']:.2f} s  # all threads")
    print(f"train_epoch_cpu_seconds_dense: {dense['epoch_cpu_seconds'] * n_materials / n_dense:.2f} s  # all threads")
    print(f"inference_materials_per_cpu_second: {sparse['inference_materials_per_cpu_second']:.0f} materials/s")
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
