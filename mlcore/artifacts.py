"""Single-file model artifacts without pickle.

An artifact is a zip file holding ``manifest.json`` (class name, hyperparameters,
JSON-serializable learned state, mlcore version) and ``arrays.npz`` (NumPy arrays,
read with ``allow_pickle=False``). Loading therefore never executes code stored in
the file, so artifacts are safe to read even if the storage is not fully trusted.
Writing atomically (temporary file + rename) is the caller's job.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

ARTIFACT_FORMAT = "mlcore-model/1"


def write_artifact(path: str | Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``manifest`` and ``arrays`` to the zip file ``path``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps({"format": ARTIFACT_FORMAT, **manifest}, indent=1))
        archive.writestr("arrays.npz", buffer.getvalue())


def read_artifact(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an artifact written by :func:`write_artifact`.

    Raises
    ------
    ValueError
        If the file is not an mlcore model artifact.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            raw_arrays = archive.read("arrays.npz")
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path} is not an mlcore model artifact: {error}") from None
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path} has artifact format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    with np.load(io.BytesIO(raw_arrays), allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return manifest, arrays
