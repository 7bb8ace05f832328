"""A compact array column that works the same on PostgreSQL and SQLite.

Spectra are stored as little-endian float32 bytes (``bytea`` / ``BLOB``), not JSON
text: a 100-point spectrum is 400 bytes instead of ~1.2 kB of digits, and decoding is
a zero-copy ``np.frombuffer`` instead of a JSON parse. ``bench/bench_storage.py``
measures both against PostgreSQL's ``double precision[]``.
"""

from __future__ import annotations

import numpy as np
from django.db import models

DTYPE = np.dtype("<f4")


def to_bytes(values) -> bytes:
    return np.ascontiguousarray(values, dtype=DTYPE).tobytes()


def from_bytes(raw: bytes | memoryview) -> np.ndarray:
    # A read-only view on the buffer the driver handed us; copy before mutating.
    return np.frombuffer(bytes(raw) if isinstance(raw, memoryview) else raw, dtype=DTYPE)


class Float32ArrayField(models.BinaryField):
    """A 1-D float32 array stored as raw bytes; reads back as ``numpy.ndarray``."""

    description = "1-D float32 array stored as bytes"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return from_bytes(value)

    def to_python(self, value):
        if value is None or isinstance(value, np.ndarray):
            return value
        if isinstance(value, (bytes, memoryview)):
            return from_bytes(value)
        return np.asarray(value, dtype=DTYPE)

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        if not isinstance(value, (bytes, memoryview)):
            value = to_bytes(value)
        return connection.Database.Binary(value)

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return "" if value is None else ",".join(f"{x:.6g}" for x in value)
