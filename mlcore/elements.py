"""Element vocabulary and tabulated K-edge energies.

Two fixed, ordered vocabularies share one index space (the atomic number minus one):

``ELEMENTS``
    H (Z=1) ... Pu (Z=94). Columns of composition vectors; ``element_index`` maps a
    symbol to its position here.
``ABSORBING_ELEMENTS``
    Li (Z=3) ... Pu (Z=94): the elements whose K-edge XANES may be a model input.
    H and He are excluded because their K edges (13.6 and 24.6 eV) lie far below
    the range covered by FEFF/Materials Project XANES.

Spectra channels use the same index as composition columns, so a spectrum of
element ``e`` and the fraction of ``e`` in the formula share ``element_index(e)``.

The K-edge energies are a static copy of ``xraydb.xray_edge(symbol, "K").energy``
(xraydb 4.5.8, Elam tables), kept inline so that mlcore needs no database at run time.
"""

from __future__ import annotations

import numpy as np

# (symbol, K-edge energy in eV), ordered by atomic number.
_K_EDGE_TABLE_EV: tuple[tuple[str, float], ...] = (
    ("H", 13.6), ("He", 24.6), ("Li", 54.7), ("Be", 111.5), ("B", 188.0), ("C", 284.2), ("N", 409.9),
    ("O", 543.1), ("F", 696.7), ("Ne", 870.2), ("Na", 1070.8), ("Mg", 1303.0), ("Al", 1559.0), ("Si", 1839.0),
    ("P", 2145.5), ("S", 2472.0), ("Cl", 2822.0), ("Ar", 3205.9), ("K", 3608.4), ("Ca", 4038.5), ("Sc", 4492.0),
    ("Ti", 4966.0), ("V", 5465.0), ("Cr", 5989.0), ("Mn", 6539.0), ("Fe", 7112.0), ("Co", 7709.0), ("Ni", 8333.0),
    ("Cu", 8979.0), ("Zn", 9659.0), ("Ga", 10367.0), ("Ge", 11103.0), ("As", 11867.0), ("Se", 12658.0),
    ("Br", 13474.0), ("Kr", 14326.0), ("Rb", 15200.0), ("Sr", 16105.0), ("Y", 17038.0), ("Zr", 17998.0),
    ("Nb", 18986.0), ("Mo", 20000.0), ("Tc", 21044.0), ("Ru", 22117.0), ("Rh", 23220.0), ("Pd", 24350.0),
    ("Ag", 25514.0), ("Cd", 26711.0), ("In", 27940.0), ("Sn", 29200.0), ("Sb", 30491.0), ("Te", 31814.0),
    ("I", 33169.0), ("Xe", 34561.0), ("Cs", 35985.0), ("Ba", 37441.0), ("La", 38925.0), ("Ce", 40443.0),
    ("Pr", 41991.0), ("Nd", 43569.0), ("Pm", 45184.0), ("Sm", 46834.0), ("Eu", 48519.0), ("Gd", 50239.0),
    ("Tb", 51996.0), ("Dy", 53789.0), ("Ho", 55618.0), ("Er", 57486.0), ("Tm", 59390.0), ("Yb", 61332.0),
    ("Lu", 63314.0), ("Hf", 65351.0), ("Ta", 67416.0), ("W", 69525.0), ("Re", 71676.0), ("Os", 73871.0),
    ("Ir", 76111.0), ("Pt", 78395.0), ("Au", 80725.0), ("Hg", 83102.0), ("Tl", 85530.0), ("Pb", 88005.0),
    ("Bi", 90526.0), ("Po", 93105.0), ("At", 95730.0), ("Rn", 98404.0), ("Fr", 101137.0), ("Ra", 103922.0),
    ("Ac", 106755.0), ("Th", 109651.0), ("Pa", 112601.0), ("U", 115606.0), ("Np", 118669.0), ("Pu", 121791.0),
)  # fmt: skip

ELEMENTS: tuple[str, ...] = tuple(symbol for symbol, _ in _K_EDGE_TABLE_EV)
ABSORBING_ELEMENTS: tuple[str, ...] = ELEMENTS[2:]
N_ELEMENTS: int = len(ELEMENTS)
K_EDGE_ENERGY_EV: dict[str, float] = dict(_K_EDGE_TABLE_EV)

_INDEX = {symbol: index for index, symbol in enumerate(ELEMENTS)}
_ABSORBING = frozenset(ABSORBING_ELEMENTS)


def element_index(symbol: str) -> int:
    """Position of ``symbol`` in :data:`ELEMENTS` (atomic number minus one).

    Raises
    ------
    ValueError
        If ``symbol`` is not one of H ... Pu.
    """
    try:
        return _INDEX[symbol]
    except (KeyError, TypeError):
        raise ValueError(f"unknown element {symbol!r}: expected a symbol from H to Pu") from None


def element_indices(symbols: list[str] | tuple[str, ...]) -> np.ndarray:
    """Vectorised :func:`element_index`; returns an int64 array."""
    return np.array([element_index(symbol) for symbol in symbols], dtype=np.int64)


def check_absorbing_element(symbol: str) -> int:
    """Index of ``symbol`` if its K-edge spectrum may be a model input, else ``ValueError``."""
    index = element_index(symbol)
    if symbol not in _ABSORBING:
        raise ValueError(f"unknown absorbing element {symbol!r}: K-edge spectra are accepted for Li to Pu only")
    return index


def k_edge_energy_ev(symbol: str) -> float:
    """Tabulated K-edge energy of ``symbol`` in eV (Elam tables via xraydb)."""
    element_index(symbol)
    return K_EDGE_ENERGY_EV[symbol]
