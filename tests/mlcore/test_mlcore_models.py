"""Estimators: registry, learning a planted signal, dense/sparse equivalence, save/load."""

import numpy as np
import pytest

from mlcore.data import MaterialSpectra
from mlcore.evaluate import choose_threshold, classification_report
from mlcore.models import MODEL_KINDS, load_model, make_model, model_kind

from .conftest import CNN_PLANTED_SETTINGS, fit_on_planted

# Small settings so the whole suite stays fast on two cores.
FAST = {"svm-sg": {}, "kmeans": {"min_spectra": 10, "n_init": 2}, "type-only": {"max_iter": 30}}


def _test_f1(model, y_val, planted):
    (X_val, _), (X_test, y_test) = planted["validation"], planted["test"]
    threshold = choose_threshold(y_val, model.predict_proba(X_val))
    return classification_report(y_test, model.predict_proba(X_test), threshold)["topological_f1"]


def test_cnn_learns_a_planted_signal_but_not_shuffled_labels(planted, planted_cnn_sg):
    learned = _test_f1(planted_cnn_sg, planted["validation"][1], planted)
    chance = _test_f1(*fit_on_planted("cnn-sg", planted, shuffle_labels=True, **CNN_PLANTED_SETTINGS), planted)
    # 25 % of test materials are topological: a constant "topological" guess scores F1 = 0.4.
    assert learned > 0.7
    assert chance < 0.45


@pytest.mark.parametrize("kind", ["svm-sg", "kmeans"])
def test_baselines_learn_the_planted_signal(kind, planted):
    assert _test_f1(*fit_on_planted(kind, planted, **FAST[kind]), planted) > 0.55


@pytest.fixture(scope="module")
def small(planted):
    """First 300 training materials: enough to fit every kind quickly."""
    X_train, y_train = planted["train"]
    return X_train.subset(np.arange(300)), y_train[:300]


@pytest.fixture(scope="module")
def fitted_models(small, planted, planted_cnn_sg, composition_cnn, seeded_cnns):
    """One fitted model per kind; the CNNs are the ones other tests train anyway."""
    X_train, y_train = small
    models = {"cnn-sg": planted_cnn_sg, "cnn": seeded_cnns["first"], "cnn-sg-composition": composition_cnn["model"]}
    for kind in ("svm-sg", "kmeans", "type-only"):
        models[kind] = make_model(kind, **FAST[kind]).fit(X_train, y_train, validation_data=planted["validation"])
    models["stacked"] = make_model("stacked", prior=models["type-only"], epochs=1, batch_size=128).fit(X_train, y_train)
    return models


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_save_load_round_trip_gives_identical_predictions(kind, fitted_models, composition_cnn, tmp_path):
    model = fitted_models[kind]
    X_test, _ = composition_cnn["validation"]  # has composition, so it suits every kind
    path = tmp_path / f"{kind}.zip"
    model.save(path)
    for restored in (load_model(path), MODEL_KINDS[kind].load(path)):
        assert model_kind(restored) == kind
        assert np.array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))
    probabilities = model.predict_proba(X_test)
    assert probabilities.shape == (X_test.n_materials,) and np.all((probabilities >= 0) & (probabilities <= 1))


def test_loading_an_artifact_as_the_wrong_kind_fails(fitted_models, tmp_path):
    fitted_models["svm-sg"].save(tmp_path / "svm.zip")
    with pytest.raises(ValueError, match="SVMClassifier"):
        MODEL_KINDS["kmeans"].load(tmp_path / "svm.zip")
    fitted_models["cnn"].save(tmp_path / "cnn.zip")
    with pytest.raises(ValueError, match="cnn-sg"):
        MODEL_KINDS["cnn-sg"].load(tmp_path / "cnn.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an mlcore model artifact"):
        load_model(tmp_path / "junk.zip")


def test_make_model_validates_kind_and_hyperparameters():
    assert make_model("cnn").use_symmetry is False
    with pytest.raises(ValueError, match="unknown model kind"):
        make_model("random-forest")
    with pytest.raises(ValueError, match="fixes"):
        make_model("cnn-sg", use_symmetry=False)
    with pytest.raises(ValueError, match="bad hyperparameters"):
        make_model("svm-sg", epochs=3)


def test_type_only_trees_match_scikit_learn(small, planted):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlcore.models.features import composition_and_symmetry

    X_train, y_train = small
    X_test, _ = planted["test"]
    model = make_model("type-only", max_iter=30).fit(X_train, y_train)
    reference = HistGradientBoostingClassifier(max_iter=30, learning_rate=0.05, class_weight="balanced", random_state=0)
    reference.fit(composition_and_symmetry(X_train), y_train)
    expected = reference.predict_proba(composition_and_symmetry(X_test))[:, 1]
    assert np.allclose(model.predict_proba(X_test), expected, atol=1e-10)


def test_type_only_needs_no_spectra(small):
    X_train, y_train = small
    no_spectra = MaterialSpectra(
        material_index=np.zeros(0, dtype=int),
        element_index=np.zeros(0, dtype=int),
        spectra=np.zeros((0, 200), dtype=np.float32),
        space_group=X_train.space_group,
        composition=X_train.composition,
    )
    model = make_model("type-only", max_iter=10).fit(no_spectra, y_train)
    assert model.predict_proba(no_spectra).shape == (X_train.n_materials,)


def test_svm_decision_matches_scikit_learn(small, planted):
    from sklearn.svm import SVC

    from mlcore.models.features import spectra_and_symmetry

    X_train, y_train = small
    X_test, _ = planted["test"]
    model = make_model("svm-sg").fit(X_train, y_train)
    reference = SVC(gamma=model.gamma_, class_weight="balanced").fit(
        spectra_and_symmetry(X_train, model.elements_), y_train
    )
    expected = reference.decision_function(spectra_and_symmetry(X_test, model.elements_))
    assert np.allclose(model.decision_function(X_test), expected, atol=1e-4)


def test_models_reject_bad_labels(small):
    X_train, y_train = small
    with pytest.raises(ValueError, match="only 0"):
        make_model("kmeans").fit(X_train, y_train * 2)
    with pytest.raises(ValueError, match="both classes"):
        make_model("svm-sg").fit(X_train, np.zeros_like(y_train))
    with pytest.raises(ValueError, match="labels for"):
        make_model("type-only").fit(X_train, y_train[:-1])
