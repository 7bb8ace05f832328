"""Space group number -> crystal system, point group and the 269-long symmetry one-hot.

The paper encodes a material's symmetry as three concatenated one-hot vectors:
crystal system (7), crystallographic point group (32) and space group (230).
International Tables number space groups so that each point group (and each
crystal system) is a contiguous range of numbers, so two small static tables of
range starts are enough; they were checked against ``spglib.get_spacegroup_type``.
"""

from __future__ import annotations

import numpy as np

CRYSTAL_SYSTEMS: tuple[str, ...] = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
# First space group number of each crystal system, in CRYSTAL_SYSTEMS order.
_CRYSTAL_SYSTEM_STARTS = np.array([1, 3, 16, 75, 143, 168, 195])

# (first space group number, Hermann-Mauguin point group symbol), in order.
_POINT_GROUP_STARTS: tuple[tuple[int, str], ...] = (
    (1, "1"), (2, "-1"), (3, "2"), (6, "m"), (10, "2/m"), (16, "222"), (25, "mm2"), (47, "mmm"),
    (75, "4"), (81, "-4"), (83, "4/m"), (89, "422"), (99, "4mm"), (111, "-42m"), (123, "4/mmm"),
    (143, "3"), (147, "-3"), (149, "32"), (156, "3m"), (162, "-3m"), (168, "6"), (174, "-6"),
    (175, "6/m"), (177, "622"), (183, "6mm"), (187, "-6m2"), (191, "6/mmm"), (195, "23"),
    (200, "m-3"), (207, "432"), (215, "-43m"), (221, "m-3m"),
)  # fmt: skip
POINT_GROUPS: tuple[str, ...] = tuple(symbol for _, symbol in _POINT_GROUP_STARTS)
_POINT_GROUP_STARTS_ARRAY = np.array([start for start, _ in _POINT_GROUP_STARTS])

N_CRYSTAL_SYSTEMS = len(CRYSTAL_SYSTEMS)
N_POINT_GROUPS = len(POINT_GROUPS)
N_SPACE_GROUPS = 230
SYMMETRY_WIDTH = N_CRYSTAL_SYSTEMS + N_POINT_GROUPS + N_SPACE_GROUPS  # 269


def check_space_groups(space_group: np.ndarray | list[int] | int) -> np.ndarray:
    """Return ``space_group`` as an int64 array, raising ``ValueError`` outside 1..230."""
    numbers = np.asarray(space_group)
    non_integer = numbers.size and not np.issubdtype(numbers.dtype, np.integer)
    if non_integer and (not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers))):
        raise ValueError("space group numbers must be integers from 1 to 230")
    numbers = numbers.astype(np.int64)
    if numbers.size and (numbers.min() < 1 or numbers.max() > N_SPACE_GROUPS):
        bad = numbers[(numbers < 1) | (numbers > N_SPACE_GROUPS)][0]
        raise ValueError(f"space group number {bad} is outside 1..230")
    return numbers


def crystal_system_index(space_group: np.ndarray | list[int] | int) -> np.ndarray:
    """Index into :data:`CRYSTAL_SYSTEMS` for each space group number."""
    return np.searchsorted(_CRYSTAL_SYSTEM_STARTS, check_space_groups(space_group), side="right") - 1


def point_group_index(space_group: np.ndarray | list[int] | int) -> np.ndarray:
    """Index into :data:`POINT_GROUPS` for each space group number."""
    return np.searchsorted(_POINT_GROUP_STARTS_ARRAY, check_space_groups(space_group), side="right") - 1


def crystal_system(space_group: int) -> str:
    """Name of the crystal system of one space group number."""
    return CRYSTAL_SYSTEMS[int(crystal_system_index(space_group))]


def point_group(space_group: int) -> str:
    """Hermann-Mauguin symbol of the point group of one space group number."""
    return POINT_GROUPS[int(point_group_index(space_group))]


def _one_hot_table() -> np.ndarray:
    numbers = np.arange(1, N_SPACE_GROUPS + 1)
    table = np.zeros((N_SPACE_GROUPS, SYMMETRY_WIDTH), dtype=np.float32)
    rows = np.arange(N_SPACE_GROUPS)
    table[rows, crystal_system_index(numbers)] = 1.0
    table[rows, N_CRYSTAL_SYSTEMS + point_group_index(numbers)] = 1.0
    table[rows, N_CRYSTAL_SYSTEMS + N_POINT_GROUPS + numbers - 1] = 1.0
    return table


# Row ``n - 1`` is the one-hot of space group ``n``; models gather from it per batch.
SYMMETRY_ONE_HOT_TABLE: np.ndarray = _one_hot_table()
SYMMETRY_ONE_HOT_TABLE.setflags(write=False)


def symmetry_one_hot(space_group: np.ndarray | list[int]) -> np.ndarray:
    """The paper's (N, 269) float32 encoding: crystal system (7) | point group (32) | space group (230)."""
    return SYMMETRY_ONE_HOT_TABLE[check_space_groups(space_group) - 1]
