import numpy as np
import pytest

from mlcore.data import MaterialSpectra, RawSpectrum, composition_matrix
from mlcore.elements import element_index
from mlcore.preprocess import SpectrumPreprocessor, edge_energy_ev, validate_spectrum

from .conftest import make_raw_spectrum


def _copy(spectrum: RawSpectrum, **changes) -> RawSpectrum:
    values = {"element": spectrum.element, "energies_ev": spectrum.energies_ev.copy(), "mu": spectrum.mu.copy()}
    return RawSpectrum(**{**values, **changes})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: _copy(s, mu=np.where(np.arange(s.mu.size) == 5, np.nan, s.mu)), r"mu\[5\] is NaN"),
        (lambda s: _copy(s, energies_ev=np.where(np.arange(100) == 7, np.inf, s.energies_ev)), r"\[7\] is infinite"),
        (lambda s: _copy(s, energies_ev=s.energies_ev[::-1].copy()), "not sorted"),
        (lambda s: _copy(s, energies_ev=np.repeat(s.energies_ev[::2], 2)), "duplicate energies"),
        (lambda s: _copy(s, energies_ev=s.energies_ev[:9], mu=s.mu[:9]), "at least 10 are needed"),
        (lambda s: _copy(s, element="Nh"), "unknown element"),
        (lambda s: _copy(s, element="H"), "unknown absorbing element"),
        (lambda s: _copy(s, energies_ev=s.energies_ev / 1000.0), "outside the Ti K-edge region"),
        (lambda s: _copy(s, mu=s.mu[:50]), "50 mu values"),
    ],
)
def test_bad_spectra_raise_value_error_naming_the_problem(change, message):
    bad = change(make_raw_spectrum("Ti"))
    with pytest.raises(ValueError, match=message):
        validate_spectrum(bad.element, bad.energies_ev, bad.mu)


def test_transform_names_the_material_of_a_bad_spectrum(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    broken = [list(spectra) for spectra in raw_materials]
    broken[4][0] = _copy(broken[4][0], energies_ev=broken[4][0].energies_ev[::-1].copy())
    with pytest.raises(ValueError, match="material 4: .*not sorted"):
        preprocessor.transform(broken, [1] * len(broken))


def test_version_1_rejects_a_spectrum_outside_the_fitted_window(raw_materials):
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)
    shifted = make_raw_spectrum("Ti", offset_ev=47.0)  # covers ~15 % of the fitted Ti window
    with pytest.raises(ValueError, match="window"):
        preprocessor.transform([[shifted]], [1])


def test_transform_shapes_and_ordering(raw_materials):
    preprocessor = SpectrumPreprocessor()
    compositions = [{s.element: 1.0 for s in spectra} for spectra in raw_materials]
    X = preprocessor.fit(raw_materials).transform(raw_materials, np.arange(1, 13), compositions)
    n_spectra = sum(len(spectra) for spectra in raw_materials)
    assert isinstance(X, MaterialSpectra)
    assert X.spectra.shape == (n_spectra, 200) and X.spectra.dtype == np.float32
    assert X.n_materials == 12 and X.composition.shape == (12, 94)
    assert np.all(np.diff(X.material_index) >= 0)
    assert X.element_sets()[2] == {"Ti", "S", "O"}
    assert np.allclose(X.composition.sum(axis=1), 1.0)


def test_version_1_window_is_the_median_of_training_ranges(raw_materials):
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)
    ti = [s for spectra in raw_materials for s in spectra if s.element == "Ti"]
    start_ev, end_ev = preprocessor.windows_ev_["Ti"]
    assert start_ev == pytest.approx(np.median([s.energies_ev[0] for s in ti]))
    assert end_ev == pytest.approx(np.median([s.energies_ev[-1] for s in ti]))
    grid = preprocessor.energy_grid_ev("Ti")
    assert grid.shape == (200,) and grid[0] == pytest.approx(start_ev) and grid[-1] == pytest.approx(end_ev)


@pytest.mark.parametrize("version", [1, 2])
def test_standardization_is_fitted_on_training_data_only(raw_materials, version):
    train, test = raw_materials[:8], raw_materials[8:]
    preprocessor = SpectrumPreprocessor(version=version).fit(train)
    X_train = preprocessor.transform(train, [1] * 8)
    for element in ("Ti", "O"):
        rows = X_train.element_index == element_index(element)
        # Paper's definition: mean of per-spectrum means -> 0, mean of per-spectrum stds -> 1.
        assert X_train.spectra[rows].mean(axis=1).mean() == pytest.approx(0.0, abs=1e-5)
        assert X_train.spectra[rows].std(axis=1).mean() == pytest.approx(1.0, rel=1e-4)
    constants = dict(preprocessor.center_), dict(preprocessor.scale_)
    # Test data are not re-centred with their own statistics (a resonance added to every test
    # spectrum survives; version 2's normalisation would undo a change of scale or offset).
    brighter = [
        [_copy(s, mu=s.mu + 3.0 * np.exp(-((((s.energies_ev - s.energies_ev[0]) - 30.0) / 8.0) ** 2))) for s in spectra]
        for spectra in test
    ]
    X_test = preprocessor.transform(brighter, [1] * 4)
    assert (dict(preprocessor.center_), dict(preprocessor.scale_)) == constants
    assert X_test.spectra.mean() > 0.5


def test_version_1_unseen_element_uses_a_window_near_its_k_edge(raw_materials):
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)
    start_ev, end_ev = preprocessor.window_ev("Fe")  # between Ti (Z=22) and Cu (Z=29)
    assert 7112.0 < start_ev < 7112.0 + 10.0 and end_ev - start_ev == pytest.approx(55.0, abs=1.0)
    X = preprocessor.transform([[make_raw_spectrum("Fe")]], [1])
    assert X.spectra.shape == (1, 200) and np.all(np.isfinite(X.spectra))


def test_shift_augment_triples_the_data_and_shifts_features(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    augmented, source_rows = preprocessor.shift_augment(raw_materials, np.arange(1, 13), shifts_ev=(-1.0, 0.0, 1.0))
    assert augmented.n_materials == 36
    assert np.array_equal(source_rows, np.tile(np.arange(12), 3))
    assert np.array_equal(augmented.space_group, np.tile(np.arange(1, 13), 3))
    # A +1 eV shift moves the resonance to higher energy, i.e. later grid points.
    first_ti = np.flatnonzero(augmented.element_index == element_index("Ti"))[0]
    n_spectra = sum(len(s) for s in raw_materials)
    minus, plus = augmented.spectra[first_ti], augmented.spectra[first_ti + 2 * n_spectra]
    assert np.argmax(plus[20:120]) > np.argmax(minus[20:120])


def test_save_and_load_round_trip(tmp_path, raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    preprocessor.save(tmp_path / "preprocessor.json")
    restored = SpectrumPreprocessor.load(tmp_path / "preprocessor.json")
    first = preprocessor.transform(raw_materials, [5] * 12).spectra
    assert np.array_equal(first, restored.transform(raw_materials, [5] * 12).spectra)


def test_unfitted_preprocessor_refuses_to_transform(raw_materials):
    with pytest.raises(ValueError, match="not fitted"):
        SpectrumPreprocessor().transform(raw_materials, [1] * 12)


def test_material_spectra_subset_and_duplicate_check(raw_materials):
    X = SpectrumPreprocessor().fit_transform(raw_materials, np.arange(1, 13))
    part = X.subset([2, 0])
    assert part.n_materials == 2 and part.element_sets() == [X.element_sets()[2], X.element_sets()[0]]
    assert np.array_equal(part.spectra[: part.spectrum_counts()[0]], X.spectra[X.material_index == 2])
    with pytest.raises(ValueError, match="more than one Ti spectrum"):
        SpectrumPreprocessor().fit_transform([[make_raw_spectrum("Ti"), make_raw_spectrum("Ti", seed=1)]], [1])


def test_composition_matrix_normalizes_and_validates():
    matrix = composition_matrix([{"Ti": 1, "O": 2}, {}])
    assert matrix[0, element_index("O")] == pytest.approx(2 / 3) and matrix[1].sum() == 0
    with pytest.raises(ValueError, match="unknown element"):
        composition_matrix([{"Qq": 1}])
    with pytest.raises(ValueError, match="finite"):
        composition_matrix([{"O": -1}])


def test_edge_energy_is_where_the_spectrum_rises_fastest():
    spectrum = make_raw_spectrum("Cu", offset_ev=3.0)
    # The synthetic edge step is centred 10 % into the 55 eV range.
    expected_ev = spectrum.energies_ev[0] + 5.5
    assert edge_energy_ev(spectrum.energies_ev, spectrum.mu) == pytest.approx(expected_ev, abs=1.0)


def test_version_1_reports_a_spectrum_on_another_energy_scale_as_off_scale(raw_materials):
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)  # Ti edges from offsets of 2-4 eV
    same_scale = make_raw_spectrum("Ti", offset_ev=3.5, seed=99)
    other_scale = make_raw_spectrum("Ti", offset_ev=3.0 + 12.0, seed=99)
    offsets = preprocessor.edge_offsets_ev([other_scale])
    assert offsets["Ti"] == pytest.approx(12.0, abs=1.5)
    assert preprocessor.off_scale([same_scale]) == {}
    found = preprocessor.off_scale([other_scale])
    assert list(found) == ["Ti"]
    assert "Ti edge at" in found["Ti"] and "another energy scale" in found["Ti"]


def test_saved_preprocessors_keep_their_training_edges(raw_materials):
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)
    shifted = make_raw_spectrum("O", offset_ev=20.0, seed=7)
    restored = SpectrumPreprocessor.from_dict(preprocessor.to_dict())
    assert restored.edge_offsets_ev([shifted]) == preprocessor.edge_offsets_ev([shifted])
    assert list(restored.off_scale([shifted])) == ["O"]
    # A preprocessor saved before edges were recorded has no scale to check against.
    state = preprocessor.to_dict()
    for constants in state["elements"].values():
        del constants["edge_ev"]
    legacy = SpectrumPreprocessor.from_dict(state)
    assert legacy.edge_offsets_ev([shifted]) == {} and legacy.off_scale([shifted]) == {}
