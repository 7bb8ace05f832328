"""``SpectrumPreprocessor.transform_arrays`` (the screening path) equals ``transform``."""

import json
from pathlib import Path

import numpy as np
import pytest

from mlcore.data import RawSpectrum
from mlcore.elements import ELEMENTS, element_index
from mlcore.preprocess import BATCH_ROWS, SpectrumPreprocessor
from mlcore.spectrum import normalisation_problem, normalise

from .conftest import make_raw_spectrum

SPECTRA = Path(__file__).resolve().parents[2] / "data" / "spectra" / "spectra.jsonl"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bundled() -> list[list[RawSpectrum]]:
    """The bundled FEFF spectra as stored (float32), one spectrum per compound and element."""
    if not SPECTRA.exists():
        pytest.skip("bundled spectra not present")
    by_compound: dict[int, dict[str, RawSpectrum]] = {}
    for line in SPECTRA.read_text().splitlines():
        record = json.loads(line)
        energies = np.asarray(record["energies_ev"], dtype=np.float32).astype(np.float64)
        mu = np.asarray(record["mu"], dtype=np.float32).astype(np.float64)
        by_compound.setdefault(record["amcsd_id"], {}).setdefault(
            record["element"], RawSpectrum(record["element"], energies, mu)
        )
    return [[spectra[e] for e in sorted(spectra)] for spectra in by_compound.values()]


def as_arrays(materials: list[list[RawSpectrum]], dtype=np.float32):
    """(material_index, element_index, energies blocks, mu blocks): one block per length,
    in the order the spectra first appear."""
    rows = [(row, spectrum) for row, spectra in enumerate(materials) for spectrum in spectra]
    lengths = list(dict.fromkeys(spectrum.energies_ev.size for _, spectrum in rows))
    ordered = [(row, s) for length in lengths for row, s in rows if s.energies_ev.size == length]
    blocks_e = [np.stack([s.energies_ev for _, s in ordered if s.energies_ev.size == n]).astype(dtype) for n in lengths]
    blocks_mu = [np.stack([s.mu for _, s in ordered if s.mu.size == n]).astype(dtype) for n in lengths]
    material_index = np.array([row for row, _ in ordered])
    element = np.array([element_index(s.element) for _, s in ordered])
    return material_index, element, blocks_e, blocks_mu


def assert_same(expected, actual):
    assert np.array_equal(expected.material_index, actual.material_index)
    assert np.array_equal(expected.element_index, actual.element_index)
    assert np.array_equal(expected.space_group, actual.space_group)
    assert np.array_equal(expected.composition, actual.composition)
    assert actual.spectra.dtype == np.float32 and actual.spectra.shape == expected.spectra.shape
    assert np.max(np.abs(expected.spectra - actual.spectra), initial=0.0) < TOLERANCE


@pytest.mark.parametrize("shift_ev", [0.0, -1.0, 1.0])
def test_bundled_spectra_give_the_same_inputs(bundled, shift_ev):
    # Fitted on half the compounds, so some elements use estimated windows and pooled constants.
    preprocessor = SpectrumPreprocessor().fit(bundled[::2])
    assert set(preprocessor.windows_ev_) != {s.element for spectra in bundled for s in spectra}
    space_groups = np.arange(len(bundled)) % 230 + 1
    compositions = [{s.element: 1.0 + i for i, s in enumerate(spectra)} for spectra in bundled]
    expected = preprocessor.transform(bundled, space_groups, compositions, shift_ev=shift_ev)
    material_index, element, energies, mu = as_arrays(bundled)
    actual = preprocessor.transform_arrays(
        material_index, element, energies[0], mu[0], space_groups, compositions, shift_ev=shift_ev
    )
    assert_same(expected, actual)


def test_ragged_lengths_in_blocks(bundled):
    """Spectra cut to 100, 50 (every other point) and 90 points, in one block per length."""
    ragged = []
    for row, spectra in enumerate(bundled):
        cut = []
        for s in spectra:
            take = [slice(None), slice(None, None, 2), slice(0, 90)][row % 3]
            cut.append(RawSpectrum(s.element, s.energies_ev[take], s.mu[take]))
        ragged.append(cut)
    preprocessor = SpectrumPreprocessor().fit(ragged)
    space_groups = np.full(len(ragged), 12)
    expected = preprocessor.transform(ragged, space_groups)
    material_index, element, energies, mu = as_arrays(ragged)
    assert sorted(block.shape[1] for block in energies) == [50, 90, 100]
    actual = preprocessor.transform_arrays(material_index, element, energies, mu, space_groups)
    assert_same(expected, actual)


def test_many_rows_interleaved_and_energies_on_grid_points(raw_materials):
    """More spectra than one batch, elements interleaved, float64 input, and energies that
    fall exactly on grid points and window ends (the interval boundaries: version 1's
    absolute grid)."""
    preprocessor = SpectrumPreprocessor(version=1).fit(raw_materials)
    rng = np.random.default_rng(3)
    symbols = ["Ti", "O", "Cu", "S"]
    materials = []
    for row in range(3 * BATCH_ROWS // 2):
        spectra = []
        for symbol in rng.permutation(symbols)[: 1 + row % 4]:
            grid = preprocessor.energy_grid_ev(symbol)
            energies = np.sort(rng.uniform(grid[0] - 5, grid[-1] + 5, 60))
            energies[rng.integers(0, 60, 6)] = grid[rng.integers(0, grid.size, 6)]
            energies[0], energies[-1] = min(energies[0], grid[0]), max(energies[-1], grid[-1])
            energies = np.unique(energies)
            if row % 5 == 0:  # exactly the grid
                energies = grid.copy()
            spectra.append(RawSpectrum(symbol, energies, rng.normal(1.0, 0.3, energies.size)))
        materials.append(sorted(spectra, key=lambda s: s.element))
    space_groups = rng.integers(1, 231, len(materials))
    expected = preprocessor.transform(materials, space_groups)
    material_index, element, energies, mu = as_arrays(materials, dtype=np.float64)
    actual = preprocessor.transform_arrays(material_index, element, energies, mu, space_groups)
    assert_same(expected, actual)
    assert np.array_equal(expected.spectra, actual.spectra)  # numpy.interp's arithmetic, to the last bit


def test_materials_without_spectra_and_no_spectra_at_all(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    materials = [[], raw_materials[0], []]
    expected = preprocessor.transform(materials, [1, 2, 3])
    material_index, element, energies, mu = as_arrays(materials, dtype=np.float64)
    actual = preprocessor.transform_arrays(material_index, element, energies, mu, [1, 2, 3])
    assert_same(expected, actual)
    empty = preprocessor.transform_arrays([], [], np.zeros((0, 100)), np.zeros((0, 100)), [5, 6])
    assert empty.spectra.shape == (0, 200) and empty.n_materials == 2


def broken(spectrum: RawSpectrum, problem: str) -> RawSpectrum:
    energies, mu = spectrum.energies_ev.copy(), spectrum.mu.copy()
    if problem == "nan mu":
        mu[5] = np.nan
    elif problem == "inf energy":
        energies[7] = np.inf
    elif problem == "unsorted":
        energies = energies[::-1].copy()
    elif problem == "duplicate":
        energies[10] = energies[9]
    elif problem == "region":
        energies = energies / 1000.0
    elif problem == "coverage":
        energies = energies + 47.0  # covers ~15 % of the fitted (version 1) window
    elif problem == "short":  # ends ~11 eV above its edge: cannot be normalised
        energies, mu = energies[:30], mu[:30]
    elif problem == "no edge":
        mu = np.linspace(1.0, 0.0, mu.size)
    return RawSpectrum(spectrum.element, energies, mu)


@pytest.mark.parametrize(
    ("problem", "version"),
    [(p, v) for p in ("nan mu", "inf energy", "unsorted", "duplicate", "region") for v in (1, 2)]
    + [("coverage", 1), ("short", 2), ("no edge", 2)],
)
def test_bad_spectra_raise_transforms_error(raw_materials, problem, version):
    preprocessor = SpectrumPreprocessor(version=version).fit(raw_materials)
    materials = [list(spectra) for spectra in raw_materials]
    materials[6][2] = broken(materials[6][2], problem)
    materials[4][0] = broken(materials[4][0], problem)  # the first bad one is reported
    with pytest.raises(ValueError) as expected:
        preprocessor.transform(materials, np.ones(len(materials), dtype=int))
    material_index, element, energies, mu = as_arrays(materials, dtype=np.float64)
    with pytest.raises(ValueError) as actual:
        preprocessor.transform_arrays(material_index, element, energies, mu, np.ones(len(materials), dtype=int))
    assert str(actual.value) == str(expected.value)
    assert str(actual.value).startswith("material 4: ")


def test_too_few_points_and_non_absorbing_element(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    short = [[RawSpectrum("Ti", s.energies_ev[:9], s.mu[:9]) for s in raw_materials[0] if s.element == "Ti"]]
    with pytest.raises(ValueError, match="material 0: Ti spectrum: 9 points; at least 10 are needed"):
        preprocessor.transform_arrays(*as_arrays(short), [1])
    hydrogen = raw_materials[0][0]
    with pytest.raises(ValueError, match="material 0: .*absorbing element 'H'") as error:
        preprocessor.transform_arrays([0], [ELEMENTS.index("H")], hydrogen.energies_ev[None], hydrogen.mu[None], [1])
    with pytest.raises(ValueError) as expected:
        preprocessor.transform([[RawSpectrum("H", hydrogen.energies_ev, hydrogen.mu)]], [1])
    assert str(error.value) == str(expected.value)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        preprocessor.transform_arrays([0], [len(ELEMENTS)], hydrogen.energies_ev[None], hydrogen.mu[None], [1])


def test_two_spectra_of_one_element_and_mismatched_blocks(raw_materials):
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    ti = make_raw_spectrum("Ti")
    twice = np.stack([ti.energies_ev, ti.energies_ev])
    with pytest.raises(ValueError, match="material 0 has more than one Ti spectrum"):
        preprocessor.transform_arrays([0, 0], [element_index("Ti")] * 2, twice, np.stack([ti.mu, ti.mu]), [1])
    with pytest.raises(ValueError, match="one row per spectrum"):
        preprocessor.transform_arrays([0], [element_index("Ti")], twice, twice, [1])
    with pytest.raises(ValueError, match="material 0: Ti spectrum: 50 mu values but 100 energies"):
        preprocessor.transform_arrays([0], [element_index("Ti")], ti.energies_ev[None], ti.mu[None, :50], [1])


def test_unfitted_preprocessor_is_refused():
    with pytest.raises(ValueError, match="not fitted"):
        SpectrumPreprocessor().transform_arrays([], [], np.zeros((0, 10)), np.zeros((0, 10)), [])


def test_normalised_path_many_rows_on_different_grids_and_scales(raw_materials):
    """Version 2: more spectra than one batch, each on its own grid, offset, edge position and
    intensity scale; the batch path normalises them exactly as the one-spectrum path."""
    preprocessor = SpectrumPreprocessor().fit(raw_materials)
    rng = np.random.default_rng(11)
    symbols = ["Ti", "O", "Cu", "S"]
    materials = []
    for row in range(3 * BATCH_ROWS // 2):
        spectra = []
        for i, symbol in enumerate(rng.permutation(symbols)[: 1 + row % 4]):
            base = make_raw_spectrum(symbol, offset_ev=float(rng.uniform(-15, 15)), seed=row * 4 + i)
            # Every pre-/post-edge rule: starting on the edge (no background), 20 eV below it
            # (a constant), or a full scan (a line below, a polynomial above).
            below, above, offset = [(0.0, 0.0, 0.0), (20.0, 0.0, 3.0), (250.0, 400.0, 3.0)][(row + i) % 3]
            low, high = base.energies_ev[0] - below, base.energies_ev[-1] + above
            # 80 points over the XANES (a real scan is dense there), some more around it
            xanes = rng.uniform(base.energies_ev[0], base.energies_ev[-1], 80)
            energies = np.sort(np.concatenate([xanes, rng.uniform(low, high, 40 if below else 0)]))
            mu = np.interp(energies, base.energies_ev, base.mu) + (energies - low) * 1e-3 * offset
            mu = mu * rng.uniform(0.1, 100) + rng.uniform(-5, 5) * offset
            if normalisation_problem(symbol, energies, normalise(energies, mu)) is None:  # (tested elsewhere)
                spectra.append(RawSpectrum(symbol, energies, mu))
        materials.append(sorted(spectra, key=lambda s: s.element))
    assert sum(map(len, materials)) > BATCH_ROWS
    space_groups = rng.integers(1, 231, len(materials))
    expected = preprocessor.transform(materials, space_groups, shift_ev=1.0)
    material_index, element, energies, mu = as_arrays(materials, dtype=np.float64)
    actual = preprocessor.transform_arrays(material_index, element, energies, mu, space_groups, shift_ev=1.0)
    assert np.array_equal(expected.spectra, actual.spectra)
