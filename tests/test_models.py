import numpy as np
import pytest
from django.db import IntegrityError, transaction

from materials.ingest.labels import binary_class, training_label
from materials.models import Material, ModelVersion, Spectrum, TopologyLabel


def make_material(**fields):
    defaults = {"formula": "Bi2Se3", "reduced_formula": "Bi2Se3", "elements": ["Bi", "Se"], "source": "user"}
    return Material.objects.create(**{**defaults, **fields})


@pytest.mark.django_db
def test_spectrum_arrays_round_trip_as_float32():
    material = make_material()
    energies = np.linspace(13400.0, 13480.0, 100)
    mu = np.sin(energies / 10.0)
    spectrum = Spectrum.objects.create(material=material, element="Bi", energies_ev=energies, mu=mu, source="feff")
    stored = Spectrum.objects.get(pk=spectrum.pk)
    assert stored.energies_ev.dtype == np.float32
    assert stored.npoints == 100
    np.testing.assert_allclose(stored.energies_ev, energies, rtol=1e-7)
    np.testing.assert_allclose(stored.mu, mu, atol=1e-6)


@pytest.mark.django_db
def test_identifiers_are_unique_where_present_and_may_be_absent():
    make_material(mp_id=None)
    make_material(mp_id=None)  # two materials without an mp_id are fine
    make_material(mp_id="mp-541837")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_material(mp_id="mp-541837")


@pytest.mark.django_db
def test_the_database_allows_only_one_production_model():
    ModelVersion.objects.create(kind="cnn-sg", is_production=True)
    ModelVersion.objects.create(kind="cnn")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(kind="svm-sg", is_production=True)


@pytest.mark.django_db
def test_a_material_carries_one_label_per_catalogue():
    material = make_material()
    TopologyLabel.objects.create(material=material, catalogue="materiae", raw_class="TI", binary_class="topological")
    with pytest.raises(IntegrityError), transaction.atomic():
        TopologyLabel.objects.create(
            material=material, catalogue="materiae", raw_class="TCI", binary_class="topological"
        )


@pytest.mark.django_db
def test_training_label_follows_catalogue_priority():
    material = make_material()
    TopologyLabel.objects.create(material=material, catalogue="arsenal", raw_class="case1", binary_class="trivial")
    TopologyLabel.objects.refresh_material_labels()
    assert Material.objects.get(pk=material.pk).label == "trivial"
    TopologyLabel.objects.create(material=material, catalogue="materiae", raw_class="TI", binary_class="topological")
    TopologyLabel.objects.refresh_material_labels([material.pk])
    assert Material.objects.get(pk=material.pk).label == "topological"
    user = TopologyLabel(material=material, catalogue="user", raw_class="trivial", binary_class="trivial")
    assert training_label(list(material.labels.all()) + [user]) is user


def test_binary_class_rejects_unknown_classes_by_name():
    assert binary_class("tqc", "NLC") == "topological"
    with pytest.raises(ValueError, match="unknown materiae class 'Weird'"):
        binary_class("materiae", "Weird")
    with pytest.raises(ValueError, match="unknown catalogue 'aflow'"):
        binary_class("aflow", "TI")


@pytest.mark.django_db
def test_has_spectra_means_every_element_has_a_spectrum():
    material = make_material()
    Spectrum.objects.create(material=material, element="Bi", energies_ev=np.arange(20.0), mu=np.ones(20), source="feff")
    Material.objects.refresh_has_spectra()
    assert not Material.objects.get(pk=material.pk).has_spectra
    Spectrum.objects.create(material=material, element="Se", energies_ev=np.arange(20.0), mu=np.ones(20), source="feff")
    Material.objects.refresh_has_spectra()
    assert Material.objects.get(pk=material.pk).has_spectra


@pytest.mark.django_db
def test_element_filter_key_matches_whole_symbols():
    make_material()
    make_material(formula="SnS", reduced_formula="SnS", elements=["S", "Sn"])
    assert Material.objects.filter(elements_key__contains="-S-").count() == 1
    assert Material.objects.filter(elements_key__contains="-Se-").count() == 1
