"""The screening path (raw SQL into arrays, batch preprocessing) gives what the record
path (ORM rows, per-spectrum preprocessing) gives, on the bundled subset."""

import numpy as np
import pytest

from materials.fields import to_bytes
from materials.ingest.bundled import load_bundled
from materials.learning.arrays import load_records, load_spectra_arrays
from materials.learning.inference import (
    classifiable_materials,
    classify_ids,
    load_bundle,
    predict_records,
    transform_arrays,
)
from materials.learning.training import request_training, train_model_version, transform_records
from materials.models import Material, ModelVersion, Prediction, Spectrum
from mlcore.elements import element_index
from tests.conftest import make_subset

pytestmark = pytest.mark.django_db


@pytest.fixture
def svm_sg(tmp_path, settings) -> ModelVersion:
    """An svm-sg trained on the bundled subset. The test transaction never commits, so
    the training task is not sent (or run eagerly): it runs here, as a worker runs it."""
    settings.MEDIA_ROOT = tmp_path / "media"
    load_bundled(make_subset(tmp_path / "data", n_compounds=30, n_extra_materiae=40))
    run = request_training("svm-sg")
    train_model_version(run.pk)
    version = ModelVersion.objects.get(pk=run.model_version_id)
    assert version.status == ModelVersion.State.READY
    return version


def spectral_ids(version) -> list[int]:
    return list(classifiable_materials(version).order_by("id").values_list("id", flat=True))


def assert_same_inputs(version, ids):
    bundle = load_bundle(version)
    records = load_records(ids)
    arrays = load_spectra_arrays(ids)
    assert arrays is not None
    assert np.array_equal(arrays.material_ids, records.material_ids)
    assert np.array_equal(arrays.space_groups, records.space_groups)
    expected = transform_records(bundle.preprocessor, records)
    actual = transform_arrays(bundle.preprocessor, arrays)
    assert np.array_equal(actual.material_index, expected.material_index)
    assert np.array_equal(actual.element_index, expected.element_index)
    assert np.max(np.abs(actual.spectra - expected.spectra), initial=0.0) < 1e-5
    p_expected = bundle.model.predict_proba(expected)
    p_actual = bundle.model.predict_proba(actual)
    assert np.max(np.abs(p_actual - p_expected)) < 1e-9
    return p_expected


def test_same_inputs_and_probabilities_as_the_record_path(svm_sg):
    ids = spectral_ids(svm_sg)
    assert len(ids) >= 20
    assert_same_inputs(svm_sg, ids)
    # Any order of ids, and materials without spectra (their rows only carry symmetry).
    bare = Material.objects.filter(has_spectra=False).exclude(space_group_number=None)
    bare = list(bare.values_list("id", flat=True)[:3])
    assert len(bare) == 3
    mixed = list(reversed(ids[:7])) + bare + ids[7:12]
    assert_same_inputs(svm_sg, mixed)


def test_classify_ids_stores_the_record_paths_probabilities(svm_sg):
    ids = spectral_ids(svm_sg)
    expected = predict_records(svm_sg, load_records(ids))
    timings: dict[str, float] = {}
    assert classify_ids(svm_sg, ids, timings) == len(ids)
    assert set(timings) == {"read", "preprocess", "infer", "write"}
    stored = dict(Prediction.objects.filter(model_version=svm_sg).values_list("material_id", "probability"))
    assert np.max(np.abs(np.array([stored[pk] for pk in ids]) - expected)) < 1e-9
    assert classify_ids(svm_sg, ids) == 0  # already predicted: kept, not duplicated


def test_source_preference_and_excluded_sources(svm_sg):
    """Per element FEFF (the training set's scale) wins over the Materials Project, which
    is used where FEFF is missing; measured spectra are never used."""
    ids = spectral_ids(svm_sg)
    material = Material.objects.get(pk=ids[3])
    feff = Spectrum.objects.filter(material=material, source=Spectrum.Source.FEFF).first()
    shifted = (feff.mu * 1.5 + 0.2).astype(np.float32)
    Spectrum.objects.create(
        material=material,
        element=feff.element,
        energies_ev=feff.energies_ev,
        mu=shifted,
        source=Spectrum.Source.MATERIALS_PROJECT,
    )
    other = Material.objects.get(pk=ids[6])
    replaced = Spectrum.objects.filter(material=other, source=Spectrum.Source.FEFF).first()
    replaced_mu = (replaced.mu * 0.5).astype(np.float32)
    Spectrum.objects.create(
        material=other,
        element=replaced.element,
        energies_ev=replaced.energies_ev,
        mu=replaced_mu,
        source=Spectrum.Source.MATERIALS_PROJECT,
    )
    replaced.delete()
    Spectrum.objects.create(
        material=Material.objects.get(pk=ids[4]),
        element=feff.element,
        energies_ev=feff.energies_ev + 3.0,
        mu=feff.mu,
        source=Spectrum.Source.MEASURED,
    )
    arrays = load_spectra_arrays(ids)
    row = np.flatnonzero((arrays.material_index == 3) & (arrays.element_index == element_index(feff.element)))[0]
    assert np.array_equal(arrays.mu[0][row], feff.mu)
    row = np.flatnonzero((arrays.material_index == 6) & (arrays.element_index == element_index(replaced.element)))[0]
    assert np.array_equal(arrays.mu[0][row], replaced_mu)
    assert_same_inputs(svm_sg, ids)


def test_bad_stored_spectrum_raises_the_record_paths_error(svm_sg):
    ids = spectral_ids(svm_sg)
    spectrum = Spectrum.objects.filter(material_id=ids[5]).first()
    Spectrum.objects.filter(pk=spectrum.pk).update(energies_ev=to_bytes(spectrum.energies_ev[::-1]))
    with pytest.raises(ValueError) as expected:
        predict_records(svm_sg, load_records(ids))
    with pytest.raises(ValueError) as actual:
        classify_ids(svm_sg, ids)
    assert str(actual.value) == str(expected.value)
    assert "material 5: " in str(actual.value) and "not sorted" in str(actual.value)
    assert not Prediction.objects.filter(model_version=svm_sg).exists()


def test_spectra_the_arrays_cannot_hold_go_through_the_record_path(svm_sg):
    ids = spectral_ids(svm_sg)
    spectrum = Spectrum.objects.filter(material_id=ids[2]).first()
    Spectrum.objects.filter(pk=spectrum.pk).update(mu=to_bytes(spectrum.mu[:50]))
    assert load_spectra_arrays(ids) is None
    with pytest.raises(ValueError, match="material 2: .* 50 mu values but 100 energies"):
        classify_ids(svm_sg, ids)
    # Mixed lengths are fine: one block per length.
    Spectrum.objects.filter(pk=spectrum.pk).update(
        energies_ev=to_bytes(spectrum.energies_ev[::2]), mu=to_bytes(spectrum.mu[::2])
    )
    arrays = load_spectra_arrays(ids)
    assert sorted(block.shape[1] for block in arrays.energies_ev) == [50, 100]
    assert_same_inputs(svm_sg, ids)


def test_unknown_ids_raise_like_the_record_path(svm_sg):
    ids = spectral_ids(svm_sg)
    missing = max(ids) + 1000
    with pytest.raises(KeyError):
        load_records([ids[0], missing])
    with pytest.raises(KeyError):
        load_spectra_arrays([ids[0], missing])
