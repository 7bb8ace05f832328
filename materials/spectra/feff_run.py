"""FEFF10 itself (``feff10-rs``): the presets, the input for one absorbing site (pymatgen's
``MPXANESSet``) and one run of every FEFF stage. :mod:`materials.spectra.feff` builds an element's
spectrum from these runs (structure checks, inequivalent sites, the site average).

Presets
-------
``mp``
    ``MPXANESSet`` as it is (self-consistent potentials ``SCF 4.5 0 30 .2 1``, full
    multiple scattering ``FMS 7.5 0``, ``XANES 3.7 .04 .1``, ``COREHOLE FSR``, ...)
    minus the ``LDOS`` card, which only adds a density-of-states output and does not
    change the spectrum. This reproduces MP's Co K edge of LiCoO2 (see BENCHMARKS.md).
``fast``
    ``mp`` without ``SCF`` (overlapped-atom potentials) and with the full multiple
    scattering radius cut to 6 Å (``FMS 6.0 0``). The bundled head-start spectra in
    ``data/spectra/`` were computed with this preset, one site per element.

This module imports nothing from Django, so scripts and workers can use it alone.
FEFF's stage processes print to the inherited stdout; :func:`run_feff` points file
descriptors 1 and 2 at a log in the scratch directory while FEFF runs, which is
process-wide: call it from one thread per process (a Celery prefork child, a
command), not from a threaded web server.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

EDGE = "K"
#: ``xmu.dat`` columns: omega (absolute energy, eV) and mu.
XMU_ENERGY_COLUMN, XMU_MU_COLUMN = 0, 3


class FeffError(ValueError):
    """The structure, element or preset cannot be computed; the message says why."""


@dataclass(frozen=True)
class Preset:
    """A named modification of pymatgen's ``MPXANESSet`` cards.

    ``user_tag_settings`` is passed to ``MPXANESSet`` as is: keys override cards and
    ``"_del"`` lists cards to remove.
    """

    name: str
    description: str
    user_tag_settings: dict
    cluster_radius_angstrom: float = 10.0  # MPXANESSet's default ATOMS radius


PRESETS: dict[str, Preset] = {
    "mp": Preset(
        name="mp",
        description="pymatgen MPXANESSet K edge with the LDOS card removed",
        user_tag_settings={"_del": ["LDOS"]},
    ),
    "fast": Preset(
        name="fast",
        description="pymatgen MPXANESSet K edge with SCF and LDOS removed, FMS 6.0",
        user_tag_settings={"_del": ["LDOS", "SCF"], "FMS": [6.0, 0]},
    ),
}


@cache
def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the spectrum."""
    versions = {"python": platform.python_version()}
    for package in ("feff10-rs", "pymatgen", "spglib", "numpy", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def feff_description(preset: str) -> str:
    """One line naming the FEFF build and the preset, as in the bundled data's ``feff`` field."""
    return f"feff10-rs {library_versions()['feff10-rs']}; {PRESETS[preset].description}"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise FeffError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# --- FEFF --------------------------------------------------------------------------------


def feff_input(structure, site_index: int, preset: str, work_dir: Path) -> tuple[str, dict]:
    """Write the FEFF input for one absorbing site with ``MPXANESSet``; returns the
    ``feff.inp`` text and the cards as JSON-ready settings."""
    from pymatgen.io.feff.sets import MPXANESSet

    chosen = get_preset(preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about things FEFF does not care about
        input_set = MPXANESSet(
            site_index,
            structure,
            edge=EDGE,
            radius=chosen.cluster_radius_angstrom,
            user_tag_settings=dict(chosen.user_tag_settings),
        )
        input_set.write_input(str(work_dir))
    cards = {key: _json_ready(value) for key, value in input_set.tags.items()}
    return (work_dir / "feff.inp").read_text(), cards


def _json_ready(value):
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log_path``: FEFF's stage processes inherit
    them and print a hundred lines per run, which would drown a worker's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_tail(path: Path, n_lines: int = 8) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n_lines:])


def run_feff(input_text: str, work_dir: Path, timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Run every FEFF stage on ``input_text`` in ``work_dir``.

    Parameters
    ----------
    input_text : str
        The ``feff.inp`` contents.
    work_dir : Path
        An existing, writable folder for FEFF's files.
    timeout_s : float, optional
        Upper bound on each stage, in seconds; ``feff10-rs`` kills a stage that
        runs longer.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, float]
        Energies (eV), mu, and the wall time in seconds.

    Raises
    ------
    FeffError
        If FEFF fails or times out, with the tail of its log.
    """
    import feff10

    log_path = work_dir / "feff.log"
    started = time.perf_counter()
    try:
        parsed = feff10.FeffInput.parse(input_text)
        parsed.validate()
        config = feff10.FeffConfig(str(work_dir), parsed, stage_timeout=timeout_s)
        with _output_to(log_path):
            result = feff10.FeffPipeline(config).run()
        table = result.read_xmu()
    except feff10.FeffError as error:
        tail = _log_tail(log_path)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FeffError(f"FEFF failed: {reason}" + (f" (log: {tail})" if tail else "")) from None
    seconds = time.perf_counter() - started
    energies_ev = np.asarray(table.column(XMU_ENERGY_COLUMN), dtype=float)
    mu = np.asarray(table.column(XMU_MU_COLUMN), dtype=float)
    if len(energies_ev) < 10 or not np.all(np.isfinite(mu)) or np.any(np.diff(energies_ev) <= 0):
        raise FeffError(f"FEFF produced an unusable xmu.dat ({len(energies_ev)} points)")
    return energies_ev, mu, seconds
