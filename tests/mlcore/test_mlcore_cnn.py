"""The CNN: sparse formulation equals the dense reference, training interface, encoding."""

import numpy as np
import pytest

from mlcore.data import MaterialSpectra
from mlcore.elements import element_index
from mlcore.models import make_model


def _with_awkward_materials(X: MaterialSpectra) -> MaterialSpectra:
    """Append a material without spectra and one whose only spectrum has no model channel."""
    extra = MaterialSpectra(
        material_index=np.array([1]),
        element_index=np.array([element_index("Pu")]),
        spectra=np.ones((1, X.n_points), dtype=np.float32),
        space_group=np.array([225, 12]),
        composition=np.full((2, X.composition.shape[1]), 1 / X.composition.shape[1], dtype=np.float32),
    )
    return MaterialSpectra.concatenate([X, extra])


def test_sparse_formulation_matches_the_dense_reference(composition_cnn):
    model = composition_cnn["model"]
    X_val = _with_awkward_materials(composition_cnn["validation"][0])
    dense = model.to_formulation("dense")
    assert "spectra_per_channel" in dense.model_.input and "spectra" in model.model_.input
    sparse_p, dense_p = model.predict_proba(X_val), dense.predict_proba(X_val)
    assert np.max(np.abs(sparse_p - dense_p)) < 1e-5
    assert np.max(np.abs(model.encode(X_val) - dense.encode(X_val))) < 1e-4
    # The absent-element channels matter: a material without spectra still gets the
    # dense model's prediction, which is not the all-zero-feature one.
    assert dense_p[-2] == pytest.approx(sparse_p[-2], abs=1e-5)


def test_training_is_deterministic_and_formulation_independent_under_a_seed(seeded_cnns, composition_cnn):
    X_val = composition_cnn["validation"][0]
    first, second, dense = (seeded_cnns[name].predict_proba(X_val) for name in ("first", "second", "dense"))
    assert np.array_equal(first, second)
    # Same seed, same batches, same initial weights: the dense formulation trains to the
    # same function up to float32 rounding.
    assert np.max(np.abs(first - dense)) < 1e-4


def test_composition_model_requires_composition(composition_cnn):
    X_train, y_train = composition_cnn["train"]
    without = MaterialSpectra(
        X_train.material_index, X_train.element_index, X_train.spectra, X_train.space_group,
        np.zeros_like(X_train.composition),
    )  # fmt: skip
    with pytest.raises(ValueError, match="composition is missing"):
        make_model("cnn-sg-composition", epochs=1).fit(without, y_train)


def test_unfitted_model_refuses_to_predict(composition_cnn):
    with pytest.raises(ValueError, match="not fitted"):
        make_model("cnn-sg").predict_proba(composition_cnn["validation"][0])


def test_sparse_dense_layer_training_and_inference_paths_agree():
    import tensorflow as tf

    from mlcore.models.cnn_architecture import SparseElementDense

    rng = np.random.default_rng(0)
    counts = np.array([3, 0, 1, 2], dtype=np.int32)
    channels = np.array([0, 4, 2, 1, 1, 3], dtype=np.int32)  # materials 0, 2, 3; material 1 has none
    features = rng.normal(size=(6, 5)).astype(np.float32)
    empty = rng.normal(size=(1, 5)).astype(np.float32)
    layer = SparseElementDense(units=7, n_channels=5, l2_strength=0.0)
    inputs = [tf.constant(features), tf.constant(empty), tf.constant(channels), tf.constant(counts)]
    grouped = layer(inputs, training=False).numpy()
    block = layer(inputs, training=True).numpy()
    slots = np.repeat(empty[None], 4, axis=0).repeat(5, axis=1)  # (materials, channels, features)
    slots[np.repeat(np.arange(4), counts), channels] = features
    kernel, bias = (w.numpy() for w in layer.weights)
    expected = np.maximum(slots.reshape(4, -1) @ kernel + bias, 0.0)
    assert np.allclose(grouped, expected, atol=1e-5) and np.allclose(block, expected, atol=1e-5)
