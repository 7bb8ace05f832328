"""Keras builders for the spectral CNN, in a sparse and a dense formulation.

Both formulations compute the same function (the paper's network):

* Each material is a (n_channels, L) array with one row per absorbing element;
  rows of absent elements are zero.
* One convolutional stack (``spectrum_encoder``), shared by every channel, maps each
  row to F features (Conv1D + ReLU + max pooling, L2 on the kernels).
* The (n_channels, F) features are flattened and fed to the largest dense layer
  (``spectra_dense``, with dropout), optionally concatenated with a dense layer over
  the 269-long symmetry one-hot and one over the composition vector, then an 8-unit
  ``encoded`` layer and a sigmoid output.
* With a prior (the stacked prior + spectra model), the network also receives the
  log-odds of a composition + symmetry prior: the output is
  ``sigmoid(spectral_logit(encoded) + prior_weight * prior_logit)``, with
  ``prior_weight`` learned and starting at 1, so the spectra learn a correction to the
  prior rather than the whole answer.

The *dense* formulation (:func:`build_dense_cnn`) does exactly that on an input of
shape (B, n_channels, L). Most rows are zero (about 3 of 81 elements are present),
yet the encoder still runs on all of them; an absent row yields the constant feature
vector ``encoder(0)`` (ReLU of the bias), not zeros.

The *sparse* formulation (:func:`build_sparse_cnn`) runs the encoder once per present
spectrum (M rows) plus once on a single zero spectrum, and :class:`SparseElementDense`
evaluates ``spectra_dense`` as if the M feature vectors sat in their (material,
channel) slots and ``encoder(0)`` filled every other slot. That is exactly the dense
formulation's flattened input, so the two models give the same outputs with the same
weights (tested to |dp| < 1e-5) while the convolutions cost M instead of
B * n_channels rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from mlcore.symmetry import SYMMETRY_WIDTH  # noqa: E402


def build_spectrum_encoder(
    spectrum_length: int, filters: int, kernel_size: int, n_conv_layers: int, pool_size: int, l2_strength: float
) -> keras.Model:
    """Convolutional stack shared by all element channels: (batch, L) -> (batch, F)."""
    spectrum = keras.Input(shape=(spectrum_length,), name="spectrum")
    hidden = layers.Reshape((spectrum_length, 1), name="spectrum_as_sequence")(spectrum)
    for layer_number in range(1, n_conv_layers + 1):
        hidden = layers.Conv1D(
            filters,
            kernel_size,
            padding="same",
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(l2_strength),
            name=f"convolution_{layer_number}",
        )(hidden)
        hidden = layers.MaxPooling1D(pool_size, name=f"max_pooling_{layer_number}")(hidden)
    features = layers.Flatten(name="spectrum_features")(hidden)
    return keras.Model(spectrum, features, name="spectrum_encoder")


@keras.saving.register_keras_serializable(package="mlcore")
class ZeroSpectrum(layers.Layer):
    """Outputs one all-zero spectrum (1, L), whatever the batch; its encoding fills absent slots."""

    def __init__(self, spectrum_length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spectrum_length = spectrum_length

    def call(self, spectra: tf.Tensor) -> tf.Tensor:
        return tf.zeros((1, self.spectrum_length), dtype=spectra.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (1, self.spectrum_length)

    def get_config(self) -> dict:
        return {**super().get_config(), "spectrum_length": self.spectrum_length}


@keras.saving.register_keras_serializable(package="mlcore")
class SparseElementDense(layers.Layer):
    """``Dense(units, relu)`` over the flattened (channel, feature) slots, fed by present spectra only.

    Inputs ``[features (M, F), empty_features (1, F), element_channel (M,), spectrum_count (B,)]``
    with spectra ordered by material. The slot of a present element holds its spectrum's
    features and every other slot holds ``empty_features``; the output equals a Keras
    ``Dense`` on the dense formulation's flattened encoder output (same kernel layout
    and initialisation), computed in one of two equivalent ways:

    training
        Scatter the M feature vectors into a (B, n_channels * F) slot block and multiply
        by the kernel; its gradient is one dense matrix product.
    inference
        ``sum_c empty @ kernel_c`` plus, for each present spectrum,
        ``(features - empty) @ kernel_channel``, grouped by channel: about n_channels / 3
        times fewer operations than the slot block, but a slower gradient.
    """

    def __init__(self, units: int, n_channels: int, l2_strength: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.n_channels = n_channels
        self.l2_strength = l2_strength

    def build(self, input_shapes: list[tuple]) -> None:
        self.n_features = int(input_shapes[0][-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.n_channels * self.n_features, self.units),
            initializer="glorot_uniform",
            regularizer=keras.regularizers.L2(self.l2_strength),
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        features, empty_features, element_channel, spectrum_count = inputs
        n_materials = tf.shape(spectrum_count)[0]
        material = tf.repeat(tf.range(n_materials), tf.cast(spectrum_count, tf.int32))
        channel = tf.cast(element_channel, tf.int32)
        combine = self._slot_block_product if training else self._grouped_product
        return tf.nn.relu(combine(features, empty_features, channel, material, n_materials) + self.bias)

    def _slot_block_product(self, features, empty_features, channel, material, n_materials) -> tf.Tensor:
        slots = tf.broadcast_to(
            tf.reshape(empty_features, (1, 1, self.n_features)), (n_materials, self.n_channels, self.n_features)
        )
        slots = tf.tensor_scatter_nd_update(slots, tf.stack([material, channel], axis=1), features)
        return tf.matmul(tf.reshape(slots, (n_materials, self.n_channels * self.n_features)), self.kernel)

    def _grouped_product(self, features, empty_features, channel, material, n_materials) -> tf.Tensor:
        kernel = tf.reshape(self.kernel, (self.n_channels, self.n_features, self.units))
        every_slot_empty = tf.matmul(empty_features, tf.reduce_sum(kernel, axis=0))
        change = features - empty_features
        rows = tf.dynamic_partition(change, channel, self.n_channels)
        positions = tf.dynamic_partition(tf.range(tf.shape(change)[0]), channel, self.n_channels)
        per_spectrum = tf.dynamic_stitch(positions, [tf.matmul(rows[c], kernel[c]) for c in range(self.n_channels)])
        return tf.math.unsorted_segment_sum(per_spectrum, material, n_materials) + every_slot_empty

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        return (input_shapes[3][0], self.units)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "n_channels": self.n_channels,
            "l2_strength": self.l2_strength,
        }


@dataclass(frozen=True)
class CNNArchitecture:
    """Everything needed to build either formulation (see ``SpectraCNNClassifier`` for meanings)."""

    n_channels: int
    spectrum_length: int
    composition_width: int
    use_symmetry: bool
    use_composition: bool
    filters: int
    kernel_size: int
    n_conv_layers: int
    pool_size: int
    l2_strength: float
    dropout: float
    dense_units: int
    symmetry_units: int
    composition_units: int
    encoded_units: int
    use_prior: bool = False

    def spectrum_encoder(self) -> keras.Model:
        return build_spectrum_encoder(
            self.spectrum_length, self.filters, self.kernel_size, self.n_conv_layers, self.pool_size, self.l2_strength
        )

    def extra_inputs(self) -> dict[str, keras.KerasTensor]:
        """Per-material inputs besides the spectra."""
        extra = {}
        if self.use_symmetry:
            extra["symmetry"] = keras.Input(shape=(SYMMETRY_WIDTH,), name="symmetry")
        if self.use_composition:
            extra["composition"] = keras.Input(shape=(self.composition_width,), name="composition")
        if self.use_prior:
            extra["prior_logit"] = keras.Input(shape=(1,), name="prior_logit")
        return extra

    def classifier_head(
        self, spectral_hidden: keras.KerasTensor, extra: dict[str, keras.KerasTensor]
    ) -> keras.KerasTensor:
        """Layers after ``spectra_dense``; identical in both formulations."""
        branches = [layers.Dropout(self.dropout, name="spectra_dropout")(spectral_hidden)]
        if "symmetry" in extra:
            symmetry = layers.Dense(self.symmetry_units, activation="relu", name="symmetry_dense")(extra["symmetry"])
            branches.append(symmetry)
        if "composition" in extra:
            branches.append(
                layers.Dense(self.composition_units, activation="relu", name="composition_dense")(extra["composition"])
            )
        merged = layers.Concatenate(name="merged_branches")(branches) if len(branches) > 1 else branches[0]
        encoded = layers.Dense(self.encoded_units, activation="relu", name="encoded")(merged)
        if "prior_logit" not in extra:
            return layers.Dense(1, activation="sigmoid", name="probability")(encoded)
        spectral_logit = layers.Dense(1, name="spectral_logit")(encoded)
        prior_term = layers.Dense(1, use_bias=False, kernel_initializer="ones", name="prior_weight")(
            extra["prior_logit"]
        )
        logit = layers.Add(name="logit")([spectral_logit, prior_term])
        return layers.Activation("sigmoid", name="probability")(logit)


def build_sparse_cnn(architecture: CNNArchitecture) -> keras.Model:
    """Sparse formulation. Inputs: ``spectra`` (M, L), ``element_channel`` (M,),
    ``spectrum_count`` (B,), and ``symmetry`` (B, 269) / ``composition`` (B, C) if used."""
    encoder = architecture.spectrum_encoder()
    length = architecture.spectrum_length
    spectra = keras.Input(shape=(length,), name="spectra")
    element_channel = keras.Input(shape=(), dtype="int32", name="element_channel")
    spectrum_count = keras.Input(shape=(), dtype="int32", name="spectrum_count")
    extra = architecture.extra_inputs()
    features = encoder(spectra)
    empty_features = encoder(ZeroSpectrum(length, name="zero_spectrum")(spectra))
    hidden = SparseElementDense(
        architecture.dense_units, architecture.n_channels, architecture.l2_strength, name="spectra_dense"
    )([features, empty_features, element_channel, spectrum_count])
    inputs = {"spectra": spectra, "element_channel": element_channel, "spectrum_count": spectrum_count, **extra}
    return keras.Model(inputs, architecture.classifier_head(hidden, extra), name="spectra_cnn_sparse")


def build_dense_cnn(architecture: CNNArchitecture) -> keras.Model:
    """Dense reference formulation (the paper's). Inputs: ``spectra_per_channel``
    (B, n_channels, L) with zero rows for absent elements, plus ``symmetry`` /
    ``composition`` if used. Same layer names and weights as the sparse model."""
    encoder = architecture.spectrum_encoder()
    spectra_per_channel = keras.Input(
        shape=(architecture.n_channels, architecture.spectrum_length), name="spectra_per_channel"
    )
    extra = architecture.extra_inputs()
    features = layers.TimeDistributed(encoder, name="spectrum_encoder_per_channel")(spectra_per_channel)
    slots = layers.Flatten(name="element_slots")(features)
    hidden = layers.Dense(
        architecture.dense_units,
        activation="relu",
        kernel_regularizer=keras.regularizers.L2(architecture.l2_strength),
        name="spectra_dense",
    )(slots)
    inputs = {"spectra_per_channel": spectra_per_channel, **extra}
    return keras.Model(inputs, architecture.classifier_head(hidden, extra), name="spectra_cnn_dense")
