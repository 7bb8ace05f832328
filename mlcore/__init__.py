"""mlcore: classify materials as topological or trivial from K-edge XANES spectra.

A framework-free re-implementation of Andrejevic, Andrejevic, Rycroft & Li,
"Machine learning spectral indicators of topology": NumPy arrays and dataclasses in
and out, no web framework imports.

Modules
-------
elements     element vocabulary and tabulated K-edge energies
symmetry     space group -> crystal system / point group / 269-long one-hot
data         RawSpectrum and MaterialSpectra containers, composition vectors
preprocess   spectrum validation, energy windows, standardization, shift augmentation
split        element-balanced train/validation/test assignment
weights      class- and element-balancing sample weights
models       CNN (sparse and dense formulations), SVM, k-means/PCA, type-only baseline
evaluate     thresholds, metrics with bootstrap CIs, per-element metrics, projections
synthetic    synthetic paper-scale datasets for benchmarks and tests
"""

__version__ = "0.1.0"
