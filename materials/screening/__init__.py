"""Screening a release of structures in two stages (``pipeline``).

Stage 1 (``stage1``): every structure parsed (``structures``), stored in bulk and ranked
by the composition + symmetry prior. Stage 2 (``stage2``): FEFF spectra for a budgeted
shortlist, one job per (material, element) on the ``feff`` queue, then the spectral
model. ``release`` reads releases, ``ranking`` serves the rows, ``background`` starts
the work.

Names are imported lazily, so worker processes that only parse (no Django) can import
``materials.screening.structures`` without the app registry.
"""

from importlib import import_module

_EXPORTS = {
    "MAX_MEMBERS": "release",
    "MAX_UNCOMPRESSED_BYTES": "release",
    "MAX_COMPRESSION_RATIO": "release",
    "MAX_CIF_BYTES": "release",
    "AMCSD_SOURCE": "release",
    "Release": "release",
    "ReleaseError": "release",
    "ReleaseFile": "release",
    "read_release": "release",
    "ParsedStructure": "structures",
    "StructureSummary": "structures",
    "parse_cif": "structures",
    "summarise_cif": "structures",
    "create_batch": "pipeline",
    "create_amcsd_batch": "pipeline",
    "screen_batch": "pipeline",
    "candidates_csv": "ranking",
    "ranked": "ranking",
    "read_upload": "release",
    "start_screening_batch": "background",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'materials.screening' has no attribute {name!r}")
    value = getattr(import_module(f"materials.screening.{module}"), name)
    globals()[name] = value
    return value
