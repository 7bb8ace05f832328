"""Model artifacts on disk: one zip per ModelVersion, written atomically.

The bundle holds the fitted preprocessor (``preprocessor.json``: its version and
normalisation rule included), the mlcore model artifact (``model.zip``; no pickle inside),
the model kind, and the decision rule (``decision.json``: the calibrator fitted on
validation and the abstain band chosen there; bundles written before it have none, and
answer with raw probabilities and the single threshold). It is written to a
temporary file in the same folder and renamed into place, so a worker killed mid-write
leaves no partial file behind, and a ModelVersion only ever points to a complete one.
Artifacts load only from our own storage (MEDIA_ROOT); a path outside it is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from mlcore.decision import DecisionRule
from mlcore.models import MODEL_KINDS
from mlcore.preprocess import SpectrumPreprocessor

BUNDLE_FORMAT = "xas-screening-model/1"


@dataclass
class ModelBundle:
    kind: str
    model: object
    preprocessor: SpectrumPreprocessor | None
    decision_rule: DecisionRule | None = None


#: Leftovers of a writer killed mid-write (``.partial-*``) older than this are removed by the next
#: write. A live writer's files exist only while it writes one bundle (seconds), far below this.
STALE_PARTIAL_S = 3600


def remove_stale_partials(folder: Path, older_than_s: float = STALE_PARTIAL_S) -> int:
    """Remove ``.partial-*`` files and folders that a killed writer left in ``folder``."""
    removed, now = 0, time.time()
    for path in Path(folder).glob(".partial-*"):
        try:
            if now - path.lstat().st_mtime <= older_than_s:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:
            continue  # another writer removed it first
    return removed


def write_bundle(relative_name: str, bundle: ModelBundle) -> tuple[str, str]:
    """Write ``bundle`` under MEDIA_ROOT atomically; returns (relative path, sha256).

    Everything in flight is named ``.partial-*`` next to the target, so what a kill -9
    leaves behind is never mistaken for a bundle, and is swept by a later write.
    """
    target = Path(settings.MEDIA_ROOT) / relative_name
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".partial-") as scratch:
        model_path = Path(scratch) / "model.zip"
        bundle.model.save(model_path)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("bundle.json", json.dumps({"format": BUNDLE_FORMAT, "kind": bundle.kind}))
            archive.write(model_path, "model.zip")
            if bundle.preprocessor is not None:
                archive.writestr("preprocessor.json", json.dumps(bundle.preprocessor.to_dict()))
            if bundle.decision_rule is not None:
                archive.writestr("decision.json", json.dumps(bundle.decision_rule.to_dict()))
        data = buffer.getvalue()
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".zip")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)  # atomic on POSIX within one filesystem
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return relative_name, hashlib.sha256(data).hexdigest()


def read_bundle(relative_name: str, expected_sha256: str = "") -> ModelBundle:
    """Load a bundle written by :func:`write_bundle` from MEDIA_ROOT.

    Raises
    ------
    ValueError
        If the path leaves MEDIA_ROOT, the checksum differs, or the file is not a bundle.
    """
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / relative_name).resolve()
    if root not in path.parents:
        raise ValueError(f"refusing to load a model artifact outside MEDIA_ROOT: {relative_name}")
    data = path.read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError(f"model artifact {relative_name} does not match its recorded checksum")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            meta = json.loads(archive.read("bundle.json"))
            model_bytes = archive.read("model.zip")
            names = set(archive.namelist())
            preprocessor_state = json.loads(archive.read("preprocessor.json")) if "preprocessor.json" in names else None
            decision_state = json.loads(archive.read("decision.json")) if "decision.json" in names else None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{relative_name} is not a model bundle: {error}") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("kind") not in MODEL_KINDS:
        raise ValueError(f"{relative_name}: unknown bundle format or model kind {meta}")
    with tempfile.TemporaryDirectory() as scratch:
        model_path = Path(scratch) / "model.zip"
        model_path.write_bytes(model_bytes)
        model = MODEL_KINDS[meta["kind"]].load(model_path)
    preprocessor = SpectrumPreprocessor.from_dict(preprocessor_state) if preprocessor_state else None
    decision_rule = DecisionRule.from_dict(decision_state) if decision_state else None
    return ModelBundle(kind=meta["kind"], model=model, preprocessor=preprocessor, decision_rule=decision_rule)
