"""Models on the data: arrays from stored rows (``arrays``), training (``training``), model
artifacts (``artifacts``), classifying stored materials (``inference``) and one submitted
material (``classify_inputs`` checks it, ``classify`` answers it), calibrated decisions
(``decisions``), ranking predictions (``ranking``, ``element_keys``) and what the
committed evaluation found (``findings``)."""
