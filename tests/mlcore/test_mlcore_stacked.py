"""The stacked prior + spectra model: the prior's log-odds reach the network at training
and at prediction, and the prior travels inside the model's artifact."""

import numpy as np
import pytest

from mlcore.models import MODEL_KINDS, load_model, make_model, model_kind


@pytest.fixture(scope="module")
def stacked(composition_cnn):
    X_train, y_train = composition_cnn["train"]
    X_val, y_val = composition_cnn["validation"]
    prior = make_model("type-only", max_iter=30).fit(X_train, y_train)
    model = make_model("stacked", prior=prior, epochs=3, batch_size=64, random_state=1)
    model.fit(X_train, y_train, validation_data=(X_val, y_val))
    return model, prior, X_val


class _ShiftedPrior:
    """The same prior with its log-odds moved by ``shift`` (a stand-in input, not our code)."""

    def __init__(self, prior, shift):
        self.prior, self.shift = prior, shift

    def decision_function(self, X):
        return self.prior.decision_function(X) + self.shift


def test_the_prior_logit_reaches_the_stacked_model_at_prediction(stacked):
    model, prior, X_val = stacked
    before = model.predict_proba(X_val)
    model.prior = _ShiftedPrior(prior, 3.0)
    model._reset_functions()
    try:
        after = model.predict_proba(X_val)
    finally:
        model.prior = prior
        model._reset_functions()
    assert np.all(after > before)  # a higher prior log-odds raises every probability
    assert model.model_.get_layer("prior_weight").get_weights()[0].item() != 0.0


def test_the_prior_logit_reaches_the_stacked_model_at_training(composition_cnn):
    X_train, y_train = composition_cnn["train"]
    X_val = composition_cnn["validation"][0]
    # A prior that knows the answer exactly makes training converge on it; a constant prior does not.
    prior = make_model("type-only", max_iter=30).fit(X_train, y_train)
    oracle = make_model("stacked", prior=_Oracle(X_train, y_train), epochs=2, random_state=1)
    with pytest.raises(ValueError, match="decision_function"):
        make_model("stacked", prior=object(), epochs=1).fit(X_train, y_train)
    oracle.fit(X_train, y_train)
    assert oracle.history_[-1]["accuracy"] > 0.95
    assert make_model("stacked", prior=prior, epochs=1).fit(X_train, y_train).predict_proba(X_val).shape == (
        X_val.n_materials,
    )


class _Oracle:
    """A prior whose log-odds are +-6 from the true labels of the training rows."""

    def __init__(self, X, y):
        self.table = {row.tobytes(): label for row, label in zip(X.composition, y)}

    def decision_function(self, X):
        return np.array([6.0 if self.table.get(row.tobytes(), 0) else -6.0 for row in X.composition])


def test_stacked_model_saves_and_loads_with_its_prior(stacked, tmp_path):
    model, prior, X_val = stacked
    path = tmp_path / "stacked.zip"
    model.save(path)
    loaded = load_model(path)
    assert model_kind(loaded) == "stacked"
    np.testing.assert_allclose(loaded.predict_proba(X_val), model.predict_proba(X_val), atol=1e-6)
    np.testing.assert_allclose(loaded.prior.decision_function(X_val), prior.decision_function(X_val))


def test_kinds_declare_their_inputs_once():
    assert MODEL_KINDS["stacked"].uses_prior and MODEL_KINDS["stacked"].uses_spectra
    assert not MODEL_KINDS["type-only"].uses_spectra and MODEL_KINDS["type-only"].uses_composition
    assert {name for name, kind in MODEL_KINDS.items() if kind.augmented} == {
        "cnn-sg",
        "cnn",
        "cnn-sg-composition",
        "stacked",
    }
    assert model_kind(make_model("cnn-sg")) == "cnn-sg"  # a CNN-sg without prior is not stacked
