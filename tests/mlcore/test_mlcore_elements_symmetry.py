import numpy as np
import pytest

from mlcore.elements import (
    ABSORBING_ELEMENTS,
    ELEMENTS,
    K_EDGE_ENERGY_EV,
    check_absorbing_element,
    element_index,
    k_edge_energy_ev,
)
from mlcore.symmetry import (
    SYMMETRY_WIDTH,
    crystal_system,
    point_group,
    symmetry_one_hot,
)


def test_vocabulary_is_hydrogen_to_plutonium_in_order():
    assert len(ELEMENTS) == 94 and ELEMENTS[0] == "H" and ELEMENTS[-1] == "Pu"
    assert ABSORBING_ELEMENTS[0] == "Li" and len(ABSORBING_ELEMENTS) == 92
    assert element_index("O") == 7  # atomic number - 1
    assert all(np.diff([K_EDGE_ENERGY_EV[e] for e in ELEMENTS]) > 0)  # K edges rise with Z


@pytest.mark.parametrize("symbol", ["Nh", "Xx", "o", ""])
def test_unknown_element_is_rejected(symbol):
    with pytest.raises(ValueError, match="unknown element"):
        element_index(symbol)


def test_hydrogen_is_not_an_absorbing_channel():
    with pytest.raises(ValueError, match="unknown absorbing element"):
        check_absorbing_element("H")


def test_k_edges_match_xraydb():
    xraydb = pytest.importorskip("xraydb")
    for symbol in ("Li", "O", "Ti", "Cu", "Sb", "Pb", "Pu"):
        assert k_edge_energy_ev(symbol) == pytest.approx(xraydb.xray_edge(symbol, "K").energy)


@pytest.mark.parametrize(
    ("number", "system", "group"),
    [(1, "triclinic", "1"), (14, "monoclinic", "2/m"), (62, "orthorhombic", "mmm"), (139, "tetragonal", "4/mmm"),
     (166, "trigonal", "-3m"), (194, "hexagonal", "6/mmm"), (225, "cubic", "m-3m"), (216, "cubic", "-43m")],
)  # fmt: skip
def test_space_group_to_system_and_point_group(number, system, group):
    assert crystal_system(number) == system
    assert point_group(number) == group


def test_symmetry_one_hot_has_three_ones_in_the_right_blocks():
    encoded = symmetry_one_hot(np.arange(1, 231))
    assert encoded.shape == (230, SYMMETRY_WIDTH) == (230, 269)
    assert np.all(encoded.sum(axis=1) == 3)
    assert np.all(encoded[:, :7].sum(axis=1) == 1) and np.all(encoded[:, 7:39].sum(axis=1) == 1)
    assert np.array_equal(encoded[:, 39:], np.eye(230, dtype=np.float32))
    assert len({tuple(row) for row in encoded[:, 7:39]}) == 32  # every point group occurs


@pytest.mark.parametrize("bad", [0, 231, -5, 3.5, np.nan])
def test_invalid_space_group_is_rejected(bad):
    with pytest.raises(ValueError, match="space group"):
        symmetry_one_hot([bad])
