"""The admin's lists of rows that belong to a material: they render, find and stay one query per page."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth.models import User

from materials.models import (
    Dataset,
    Material,
    ModelVersion,
    Prediction,
    Spectrum,
    SplitAssignment,
    TopologyLabel,
)


@pytest.fixture
def superuser_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.org", "x"))
    return client


@pytest.fixture
def rows():
    dataset = Dataset.objects.create(name="split", content_hash="0" * 64)
    version = ModelVersion.objects.create(kind=ModelVersion.Kind.TYPE_ONLY, dataset=dataset)
    for number in range(5):
        material = Material.new(
            225, formula=f"Na{number + 1}Cl", reduced_formula=f"Na{number + 1}Cl", elements=["Cl", "Na"], source="user"
        )
        material.save()
        energies = np.linspace(1070.0, 1120.0, 50, dtype=np.float32)
        Spectrum.objects.create(material=material, element="Na", energies_ev=energies, mu=energies / 1e3, source="feff")
        TopologyLabel.objects.create(material=material, catalogue="user", raw_class="TI", binary_class="topological")
        Prediction.objects.create(
            material=material, model_version=version, probability=0.7, predicted_class="topological"
        )
        SplitAssignment.objects.create(dataset=dataset, material=material, subset="train")


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["spectrum", "topologylabel", "prediction", "splitassignment"])
def test_lists_of_rows_of_a_material_render_and_search(model, superuser_client, rows, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):  # 5-6 for any number of rows; one per row would be 10 or more
        response = superuser_client.get(f"/admin/materials/{model}/")
    assert response.status_code == 200
    assert response.content.decode().count("Na3Cl") == 1
    if model != "splitassignment":  # that list has no search box
        found = superuser_client.get(f"/admin/materials/{model}/", {"q": "Na3Cl"})
        assert found.status_code == 200 and "Na3Cl" in found.content.decode()


@pytest.mark.django_db
def test_a_new_material_carries_its_symmetry_and_element_key():
    material = Material.new(225, formula="NaCl", reduced_formula="NaCl", elements=["Cl", "Na"], source="user")
    assert (material.space_group_symbol, material.point_group, material.crystal_system) == ("Fm-3m", "m-3m", "cubic")
    assert material.elements_key == "-Cl-Na-"
    with pytest.raises(ValueError, match="1-230"):
        Material.new(231, formula="NaCl", reduced_formula="NaCl", elements=["Cl", "Na"], source="user")
