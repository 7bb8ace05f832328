"""Fidelity against the Materials Project (slow: minutes of FEFF).

Skipped unless asked for, with ``-m slow`` or ``RUN_SLOW=1``::

    .venv/bin/python -m pytest -m slow tests/test_feff_fidelity.py
    RUN_SLOW=1 .venv/bin/python -m pytest tests/test_feff_fidelity.py

It runs ``bench/feff_fidelity.py`` (the script behind the figures in BENCHMARKS.md)
and checks the acceptance target: at the ``mp`` preset, LiCoO2's Co K edge matches
MP's with Pearson r ≥ 0.99 after the best shift of at most 1 eV.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def only_when_asked(request):
    asked = os.environ.get("RUN_SLOW") == "1" or "slow" in (request.config.option.markexpr or "")
    if not asked:
        pytest.skip("slow (minutes of FEFF): run with -m slow or RUN_SLOW=1")


def figures(output: str) -> dict[str, float]:
    """``name: value [unit]`` lines → {name: value}."""
    found = {}
    for line in output.splitlines():
        name, _, rest = line.partition(": ")
        if rest:
            found[name.strip()] = float(rest.split()[0])
    return found


def test_the_mp_preset_reproduces_mps_licoo2_co_k_edge_and_fast_is_recorded():
    completed = subprocess.run(
        [sys.executable, "bench/feff_fidelity.py"], cwd=REPO, capture_output=True, text=True, timeout=7200
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    print(completed.stdout)
    found = figures(completed.stdout)
    assert found["feff_fidelity_r_licoo2_mp_shifted"] >= 0.99
    assert abs(found["feff_fidelity_shift_licoo2_mp"]) <= 1.0
    # The fast preset is recorded, not held to the target: without SCF its edge sits
    # several eV lower, beyond the 1 eV window, though the shape still matches.
    for name in ("feff_fidelity_r_licoo2_fast", "feff_fidelity_shift_licoo2_fast"):
        assert name in found
    assert found["feff_fidelity_r_licoo2_fast_wide_shift"] >= 0.9
