"""Spectra from structures with FEFF10: ``feff_run`` runs FEFF (presets, input, runs),
``feff`` turns a structure into an element's site-averaged K-edge spectrum, and
``spectra_compute`` is their Django side (jobs, storing the spectrum)."""
