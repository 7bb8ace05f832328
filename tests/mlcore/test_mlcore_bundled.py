"""The bundled FEFF spectra go through validation and preprocessing."""

import json
from pathlib import Path

import numpy as np
import pytest

from mlcore.data import RawSpectrum
from mlcore.preprocess import SpectrumPreprocessor, validate_spectrum

SPECTRA = Path(__file__).resolve().parents[2] / "data" / "spectra" / "spectra.jsonl"


@pytest.fixture(scope="module")
def records():
    if not SPECTRA.exists():
        pytest.skip("bundled spectra not present")
    return [json.loads(line) for line in SPECTRA.read_text().splitlines()[:120]]


def test_bundled_spectra_validate_and_standardize(records):
    by_compound: dict[int, list[RawSpectrum]] = {}
    space_groups = {}
    for record in records:
        if record["element"] == "Nh":  # a mislabelled ammonium site in one CIF
            with pytest.raises(ValueError, match="unknown element 'Nh'"):
                validate_spectrum(record["element"], record["energies_ev"], record["mu"])
            continue
        spectrum = RawSpectrum(record["element"], np.asarray(record["energies_ev"]), np.asarray(record["mu"]))
        by_compound.setdefault(record["amcsd_id"], []).append(spectrum)
        space_groups[record["amcsd_id"]] = record["spacegroup"]
    materials = list(by_compound.values())
    for version in (1, 2):
        preprocessor = SpectrumPreprocessor(version=version)
        X = preprocessor.fit_transform(materials, [space_groups[key] for key in by_compound])
        assert X.spectra.shape == (sum(map(len, materials)), 200)
        assert np.all(np.isfinite(X.spectra))
        start_ev, end_ev = preprocessor.windows_ev_["O"]
        assert 50 < end_ev - start_ev < 60  # FEFF O K edge window, ~55 eV wide
        if version == 1:
            assert 520 < start_ev < 540
        else:  # FEFF "fast" starts a few eV below E0
            assert -5 < start_ev < 0


def test_mp_spectra_are_off_the_bundled_fast_feff_scale_without_alignment():
    """The bundled spectra are FEFF without SCF; MP's Co K edge of LiCoO2 sits ~10 eV higher.
    Version 1 reads absolute energies and reports it; version 2 aligns it and has nothing to report."""
    data = SPECTRA.parent.parent
    feff = [
        json.loads(line)
        for path in sorted(SPECTRA.parent.glob("spectra*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    training = [[RawSpectrum(r["element"], np.asarray(r["energies_ev"]), np.asarray(r["mu"]))] for r in feff]
    preprocessor = SpectrumPreprocessor(version=1).fit(training)
    reference = json.loads((data / "reference" / "licoo2_co_k_mp.json").read_text())
    mp_cobalt = RawSpectrum("Co", np.asarray(reference["energies_ev"]), np.asarray(reference["mu"]))
    assert preprocessor.edge_offsets_ev([mp_cobalt])["Co"] > 8.0
    assert list(preprocessor.off_scale([mp_cobalt])) == ["Co"]
    # The training spectra themselves, chemical shifts and all, are nearly all on scale: 10 % lie outside
    # the 5-95 % range by construction, far fewer also sit over 5 eV from the median (17 of 945 here).
    flagged = sum(bool(preprocessor.off_scale(spectra)) for spectra in training)
    assert flagged <= 0.04 * len(training), f"{flagged} of {len(training)} training spectra flagged"
    aligned = SpectrumPreprocessor().fit(training)
    assert aligned.edge_offsets_ev([mp_cobalt])["Co"] > 8.0  # still measured, for information
    assert aligned.off_scale([mp_cobalt]) == {}
    assert np.all(np.isfinite(aligned.transform([[mp_cobalt]], [166]).spectra))


def test_no_element_of_the_bundled_held_out_sets_is_missing_from_training():
    """The paper loses rare elements from the test set, never from training (several seeds)."""
    from pymatgen.core import Composition

    from mlcore.split import element_balanced_split

    by_compound: dict[object, dict] = {}
    for path in sorted(SPECTRA.parent.glob("spectra*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            key = record.get("structure_id") or record["amcsd_id"]
            entry = by_compound.setdefault(key, {"formula": record["reduced_formula"], "elements": set()})
            entry["elements"].add(record["element"])
            entry["label"] = int(record["soc_topo_class"] != "Triv_Ins")
    complete = [
        c for c in by_compound.values() if {e.symbol for e in Composition(c["formula"]).elements} <= c["elements"]
    ]
    sets = [{e.symbol for e in Composition(c["formula"]).elements} for c in complete]
    y = np.array([c["label"] for c in complete])
    for seed in range(5):
        assignment = element_balanced_split(sets, y, random_state=seed).assignment
        trained = set().union(*(s for s, subset in zip(sets, assignment) if subset == "train"))
        held_out = set().union(*(s for s, subset in zip(sets, assignment) if subset != "train"))
        assert held_out <= trained, f"seed {seed}: {sorted(held_out - trained)} only outside training"
