"""Convolutional classifier over element-channel spectra (CNN, CNN-sg, CNN-sg+composition,
and the stacked prior + spectra model)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from typing import Literal  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mlcore.data import MaterialSpectra  # noqa: E402
from mlcore.elements import N_ELEMENTS, element_indices  # noqa: E402
from mlcore.models.base import (  # noqa: E402
    ProgressCallback,
    SpectraClassifier,
    channel_lookup,
    check_dataset,
    check_validation,
    spectra_elements,
)
from mlcore.models.cnn_architecture import CNNArchitecture, build_dense_cnn, build_sparse_cnn  # noqa: E402
from mlcore.symmetry import SYMMETRY_ONE_HOT_TABLE  # noqa: E402

_BUILDERS = {"sparse": build_sparse_cnn, "dense": build_dense_cnn}
#: Array names of an embedded prior inside a stacked model's artifact.
PRIOR_PREFIX = "prior__"
# The shared encoder is a layer called "spectrum_encoder" in the sparse model and is
# wrapped per channel in the dense one; weights are copied between them by layer name.
_ENCODER_NAMES = ("spectrum_encoder", "spectrum_encoder_per_channel")


class _ProgressReporter(keras.callbacks.Callback):
    """Forwards Keras epoch logs to ``progress_callback(epoch, total_epochs, logs)``."""

    def __init__(self, progress_callback: ProgressCallback, total_epochs: int) -> None:
        super().__init__()
        self.progress_callback = progress_callback
        self.total_epochs = total_epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.progress_callback(epoch + 1, self.total_epochs, {k: float(v) for k, v in (logs or {}).items()})


class SpectraCNNClassifier(SpectraClassifier):
    """The paper's CNN: shared convolutions over every absorbing element's spectrum.

    Parameters
    ----------
    use_symmetry : bool, default True
        Add the dense branch over the 269-long symmetry one-hot (CNN-sg).
    use_composition : bool, default False
        Add a dense branch over element fractions (CNN-sg+composition).
    prior : SpectraClassifier with ``decision_function``, optional
        A fitted composition + symmetry prior (a :class:`TypeOnlyClassifier`) whose
        log-odds enter the network (the stacked prior + spectra model): at training and
        at prediction the prior is evaluated on the same ``X``. Saved inside this
        model's artifact, so the stacked model is one self-contained file.
    filters, kernel_size, n_conv_layers, pool_size : int
        Convolution stack: ``n_conv_layers`` x (Conv1D(filters, kernel_size) + ReLU +
        MaxPooling1D(pool_size)), shared by all element channels.
    l2_strength : float
        L2 penalty on convolution kernels and the spectral dense kernel.
    dropout : float
        Dropout rate after the largest dense layer (``spectra_dense``).
    dense_units, symmetry_units, composition_units, encoded_units : int
        Widths of the spectral dense layer, the symmetry and composition branches
        and the encoded representation (8 in the paper) before the sigmoid.
    epochs, batch_size, learning_rate : training schedule (Adam).
    patience : int
        Early stopping patience on validation loss; best weights are restored.
        Only used when ``validation_data`` is given to ``fit``.
    formulation : {"sparse", "dense"}, default "sparse"
        Network formulation (see :mod:`mlcore.models.cnn_architecture`); both compute
        the same function, the dense one is the slow reference.
    predict_batch_size : int
        Materials per batch at inference.
    deterministic : bool, default True
        Enable TensorFlow op determinism (process-wide) so a seed fixes the result.
    random_state : int
        Seed for weight initialisation, dropout and shuffling. ``fit`` passes it to
        ``keras.utils.set_random_seed``, which also seeds Python's and NumPy's global
        generators.

    Attributes
    ----------
    elements_ : numpy.ndarray
        Element indices (into ``ELEMENTS``) that have a channel: those with spectra in
        the training data. Spectra of other elements are ignored at prediction.
    history_ : list of dict
        Per epoch: ``epoch``, ``loss``, ``accuracy`` and, with validation data,
        ``val_loss``, ``val_accuracy``.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    model_ : keras.Model
        The fitted network.
    """

    _fitted_attribute = "model_"

    def __init__(
        self,
        use_symmetry: bool = True,
        use_composition: bool = False,
        prior: SpectraClassifier | None = None,
        filters: int = 8,
        kernel_size: int = 5,
        n_conv_layers: int = 2,
        pool_size: int = 4,
        l2_strength: float = 1e-4,
        dropout: float = 0.3,
        dense_units: int = 32,
        symmetry_units: int = 16,
        composition_units: int = 16,
        encoded_units: int = 8,
        epochs: int = 30,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        patience: int = 5,
        formulation: Literal["sparse", "dense"] = "sparse",
        predict_batch_size: int = 2048,
        deterministic: bool = True,
        random_state: int = 0,
    ) -> None:
        self.use_symmetry = use_symmetry
        self.use_composition = use_composition
        self.prior = prior
        self.filters = filters
        self.kernel_size = kernel_size
        self.n_conv_layers = n_conv_layers
        self.pool_size = pool_size
        self.l2_strength = l2_strength
        self.dropout = dropout
        self.dense_units = dense_units
        self.symmetry_units = symmetry_units
        self.composition_units = composition_units
        self.encoded_units = encoded_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.formulation = formulation
        self.predict_batch_size = predict_batch_size
        self.deterministic = deterministic
        self.random_state = random_state

    # ----------------------------------------------------------------- training
    def _fit(self, X, y, sample_weight, validation_data, progress_callback) -> None:
        """Train with weighted binary cross-entropy and Adam; ``validation_data`` enables early
        stopping on validation loss; ``progress_callback(epoch, total_epochs, logs)`` after each epoch."""
        self._check_hyperparameters(X.n_points)
        if self.prior is not None and not hasattr(self.prior, "decision_function"):
            raise ValueError("prior must be a fitted composition + symmetry model with decision_function()")
        self._check_composition(X)
        keras.utils.set_random_seed(self.random_state)
        if self.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.elements_ = spectra_elements(X)
        self.spectrum_length_ = X.n_points
        self.model_ = _BUILDERS[self.formulation](self._architecture())
        self.model_.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        )
        callbacks: list[keras.callbacks.Callback] = []
        validation = None
        if validation_data is not None:
            X_val, y_val, w_val = check_validation(validation_data)
            validation = self._dataset(X_val, y_val, w_val, batch_size=self.predict_batch_size)
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True)
            )
        if progress_callback is not None:
            callbacks.append(_ProgressReporter(progress_callback, self.epochs))
        training = self._dataset(X, y, sample_weight, batch_size=self.batch_size, shuffle=True)
        logged = self.model_.fit(
            training, validation_data=validation, epochs=self.epochs, callbacks=callbacks, shuffle=False, verbose=0
        )
        n_epochs = len(logged.history["loss"])
        self.history_ = [
            {"epoch": epoch + 1, **{name: float(values[epoch]) for name, values in logged.history.items()}}
            for epoch in range(n_epochs)
        ]
        self.best_epoch_ = (
            int(np.argmin([row["val_loss"] for row in self.history_])) + 1 if validation is not None else n_epochs
        )
        self._reset_functions()

    # ---------------------------------------------------------------- inference
    def predict_proba(self, X: MaterialSpectra) -> np.ndarray:
        """(N,) float64 probability that each material is topological."""
        return self._run(X, "probability")[:, 0].astype(np.float64)

    def encode(self, X: MaterialSpectra) -> np.ndarray:
        """(N, encoded_units) learned representation before the sigmoid (paper Fig. 3d)."""
        return self._run(X, "encoded").astype(np.float64)

    def to_formulation(self, formulation: Literal["sparse", "dense"]) -> SpectraCNNClassifier:
        """A copy of this fitted model in the other formulation, with identical weights."""
        self._check_fitted()
        other = type(self)(**{**self.get_params(), "formulation": formulation})
        other.elements_ = self.elements_
        other.spectrum_length_ = self.spectrum_length_
        other.history_ = self.history_
        other.best_epoch_ = self.best_epoch_
        other.model_ = _BUILDERS[formulation](self._architecture())
        for layer in other.model_.layers:
            if layer.weights:
                _layer_by_role(other.model_, layer.name).set_weights(
                    _layer_by_role(self.model_, layer.name).get_weights()
                )
        other._reset_functions()
        return other

    # ------------------------------------------------------------------ helpers
    def _architecture(self) -> CNNArchitecture:
        return CNNArchitecture(
            n_channels=len(self.elements_),
            spectrum_length=self.spectrum_length_,
            composition_width=N_ELEMENTS,
            use_symmetry=self.use_symmetry,
            use_composition=self.use_composition,
            use_prior=self.prior is not None,
            filters=self.filters,
            kernel_size=self.kernel_size,
            n_conv_layers=self.n_conv_layers,
            pool_size=self.pool_size,
            l2_strength=self.l2_strength,
            dropout=self.dropout,
            dense_units=self.dense_units,
            symmetry_units=self.symmetry_units,
            composition_units=self.composition_units,
            encoded_units=self.encoded_units,
        )

    def _check_hyperparameters(self, spectrum_length: int) -> None:
        if self.formulation not in _BUILDERS:
            raise ValueError(f"formulation must be 'sparse' or 'dense', got {self.formulation!r}")
        if self.pool_size**self.n_conv_layers > spectrum_length:
            raise ValueError("pool_size ** n_conv_layers pools the spectrum away; use fewer layers or smaller pools")

    def _check_composition(self, X: MaterialSpectra) -> None:
        if self.use_composition and np.any(X.composition.sum(axis=1) <= 0):
            missing = int(np.sum(X.composition.sum(axis=1) <= 0))
            raise ValueError(f"composition is missing for {missing} materials; use_composition=True needs it")

    def _dataset(
        self,
        X: MaterialSpectra,
        y: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        *,
        batch_size: int,
        shuffle: bool = False,
    ) -> tf.data.Dataset:
        """tf.data pipeline of batches of whole materials (inputs[, labels, weights]).

        Spectra stay in one flat (M, L) tensor. Shuffled batches gather their materials'
        rows through ragged (material -> spectra) views; unshuffled batches (validation,
        inference) are contiguous, so they are plain slices. Dense per-channel arrays are
        only built, batch by batch, for the dense formulation.
        """
        lookup = channel_lookup(self.elements_)
        channel = lookup[X.element_index]
        keep = channel >= 0  # spectra of elements without a channel cannot enter the network
        counts = np.bincount(X.material_index[keep], minlength=X.n_materials)
        spectra = tf.constant(X.spectra if keep.all() else X.spectra[keep])  # no copy in the usual case
        channels = tf.constant(channel[keep].astype(np.int32))
        per_material = {
            "count": tf.constant(counts.astype(np.int32)),
            "space_group_row": tf.constant(X.space_group - 1),
        }
        if self.use_composition:
            per_material["composition"] = tf.constant(X.composition)
        if self.prior is not None:
            prior_logit = np.asarray(self.prior.decision_function(X), dtype=np.float32).reshape(-1, 1)
            per_material["prior_logit"] = tf.constant(prior_logit)
        if y is not None:
            per_material["label"] = tf.constant(np.asarray(y, dtype=np.float32).reshape(-1, 1))
            per_material["weight"] = tf.constant(np.asarray(sample_weight, dtype=np.float32))

        if shuffle:
            ragged_spectra = tf.RaggedTensor.from_row_lengths(spectra, counts)
            ragged_channels = tf.RaggedTensor.from_row_lengths(channels, counts)

            def gather_batch(rows: tf.Tensor):
                batch = {name: tf.gather(values, rows) for name, values in per_material.items()}
                flat_spectra = tf.gather(ragged_spectra, rows).flat_values
                return self._batch_inputs(flat_spectra, tf.gather(ragged_channels, rows).flat_values, batch)

            rows = tf.data.Dataset.range(X.n_materials)
            rows = rows.shuffle(X.n_materials, seed=self.random_state, reshuffle_each_iteration=True)
            batches = rows.batch(batch_size).map(gather_batch, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            material_starts = np.arange(0, X.n_materials, batch_size)
            material_stops = np.minimum(material_starts + batch_size, X.n_materials)
            spectrum_offsets = np.concatenate([[0], np.cumsum(counts)])

            def slice_batch(material_start, material_stop, spectrum_start, spectrum_stop):
                batch = {name: values[material_start:material_stop] for name, values in per_material.items()}
                flat_spectra = spectra[spectrum_start:spectrum_stop]
                return self._batch_inputs(flat_spectra, channels[spectrum_start:spectrum_stop], batch)

            bounds = (
                material_starts,
                material_stops,
                spectrum_offsets[material_starts],
                spectrum_offsets[material_stops],
            )
            batches = tf.data.Dataset.from_tensor_slices(bounds).map(slice_batch)
        return batches.prefetch(2)

    def _batch_inputs(self, flat_spectra: tf.Tensor, flat_channels: tf.Tensor, batch: dict[str, tf.Tensor]):
        """Model inputs (and labels, weights) of one batch from its spectra and per-material rows."""
        if self.formulation == "dense":
            n_materials = tf.shape(batch["count"])[0]
            material = tf.repeat(tf.range(n_materials), batch["count"])
            shape = tf.stack([n_materials, len(self.elements_), tf.shape(flat_spectra)[1]])
            positions = tf.stack([material, flat_channels], axis=1)
            inputs = {"spectra_per_channel": tf.scatter_nd(positions, flat_spectra, shape)}
        else:
            inputs = {"spectra": flat_spectra, "element_channel": flat_channels, "spectrum_count": batch["count"]}
        if self.use_symmetry:
            inputs["symmetry"] = tf.gather(tf.constant(SYMMETRY_ONE_HOT_TABLE), batch["space_group_row"])
        if self.use_composition:
            inputs["composition"] = batch["composition"]
        if self.prior is not None:
            inputs["prior_logit"] = batch["prior_logit"]
        if "label" not in batch:
            return inputs
        return inputs, batch["label"], batch["weight"]

    def _run(self, X: MaterialSpectra, output: str) -> np.ndarray:
        """Evaluate the network up to layer ``output`` over batches of materials."""
        self._check_fitted()
        X = check_dataset(X)
        self._check_composition(X)
        batches = self._dataset(X, batch_size=self.predict_batch_size)
        if output not in self._inference_functions:
            # One graph per output; the signature has unknown batch sizes, so no retracing.
            network = self.model_ if output == "probability" else self._submodel(output)
            self._inference_functions[output] = tf.function(
                lambda inputs: network(inputs, training=False), input_signature=[batches.element_spec]
            )
        function = self._inference_functions[output]
        results = [function(inputs).numpy() for inputs in batches]
        return np.concatenate(results) if results else np.zeros((0, self.model_.get_layer(output).output.shape[-1]))

    def _submodel(self, output: str) -> keras.Model:
        return keras.Model(self.model_.inputs, self.model_.get_layer(output).output)

    def _reset_functions(self) -> None:
        self._inference_functions = {}

    # -------------------------------------------------------------- persistence
    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        self._check_fitted()
        state = {
            "elements": self.element_symbols_,
            "spectrum_length": int(self.spectrum_length_),
            "history": self.history_,
            "best_epoch": int(self.best_epoch_),
        }
        arrays = {f"weight_{i:03d}": weight for i, weight in enumerate(self.model_.get_weights())}
        if self.prior is not None:
            prior_state, prior_arrays = self.prior._get_state()
            state["prior"] = {
                "class": type(self.prior).__name__,
                "params": self.prior.get_params(),
                "state": prior_state,
            }
            arrays.update({f"{PRIOR_PREFIX}{name}": value for name, value in prior_arrays.items()})
        return state, arrays

    def _set_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        if "prior" in state:
            from mlcore.models.type_only import TypeOnlyClassifier

            if state["prior"]["class"] != TypeOnlyClassifier.__name__:
                raise ValueError(f"unknown prior class {state['prior']['class']!r}")
            prior_arrays = {k[len(PRIOR_PREFIX) :]: v for k, v in arrays.items() if k.startswith(PRIOR_PREFIX)}
            self.prior = TypeOnlyClassifier.from_artifact(state["prior"], prior_arrays)
            arrays = {k: v for k, v in arrays.items() if not k.startswith(PRIOR_PREFIX)}
        self.elements_ = element_indices(state["elements"])
        self.spectrum_length_ = int(state["spectrum_length"])
        self.history_ = state["history"]
        self.best_epoch_ = int(state["best_epoch"])
        self.model_ = _BUILDERS[self.formulation](self._architecture())
        self.model_.set_weights([arrays[name] for name in sorted(arrays)])
        self._reset_functions()


def _layer_by_role(model: keras.Model, name: str) -> keras.layers.Layer:
    """Layer ``name`` of ``model``; the shared encoder is found under either of its names."""
    if name in _ENCODER_NAMES:
        for candidate in _ENCODER_NAMES:
            try:
                layer = model.get_layer(candidate)
            except ValueError:
                continue
            return layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
    return model.get_layer(name)
