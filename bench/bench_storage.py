"""How spectrum arrays should be stored: JSON text vs double precision[] vs float32 bytea.

Writes the same spectra (100 points of energies and of mu, the size of MP and FEFF
K-edge spectra) in three forms into scratch PostgreSQL tables, then prints per form
the bytes on disk per spectrum, the projected size of 10 million spectra, and how
fast rows are read back and decoded into NumPy arrays. The app's form is float32
bytea (``materials.fields.Float32ArrayField``); ratios are against JSON text.

Usage: python bench/bench_storage.py [--spectra 20000]
Needs PostgreSQL: DATABASE_URL, or the local server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import psycopg

POINTS = 100
FORMS = {
    "json_text": "text",
    "float8_array": "double precision[]",
    "float32_bytea": "bytea",
}


def encode(form: str, energies: np.ndarray, mu: np.ndarray):
    if form == "json_text":
        return json.dumps(energies.tolist()), json.dumps(mu.tolist())
    if form == "float8_array":
        return energies.tolist(), mu.tolist()
    return energies.astype("<f4").tobytes(), mu.astype("<f4").tobytes()


def decode(form: str, value) -> np.ndarray:
    if form == "json_text":
        return np.asarray(json.loads(value), dtype=np.float32)
    if form == "float8_array":
        return np.asarray(value, dtype=np.float32)
    return np.frombuffer(value, dtype="<f4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=20000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    rng = np.random.default_rng(0)
    # Realistic values: energies around a K edge with 4 decimals, mu with ~7 digits.
    energies = np.round(8980.0 + np.sort(rng.uniform(0, 60, size=(args.spectra, POINTS)), axis=1), 4)
    mu = np.round(rng.gamma(2.0, 0.5, size=(args.spectra, POINTS)), 7)
    results = {}
    with psycopg.connect(url, autocommit=True) as connection:
        for form, sql_type in FORMS.items():
            table = f"bench_spectra_{form}"
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(f"CREATE TABLE {table} (id serial primary key, energies_ev {sql_type}, mu {sql_type})")
            started = time.perf_counter()
            with connection.cursor() as cursor, cursor.copy(f"COPY {table} (energies_ev, mu) FROM STDIN") as copy:
                for e, m in zip(energies, mu, strict=True):
                    copy.write_row(encode(form, e, m))
            write_seconds = time.perf_counter() - started
            connection.execute(f"VACUUM ANALYZE {table}")
            size = connection.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()[0]
            started = time.perf_counter()
            with connection.cursor(binary=True) as cursor:
                cursor.execute(f"SELECT energies_ev, mu FROM {table}")
                decoded = [(decode(form, e), decode(form, m)) for e, m in cursor]
            read_seconds = time.perf_counter() - started
            assert len(decoded) == args.spectra and decoded[0][0].shape == (POINTS,)
            connection.execute(f"DROP TABLE {table}")
            results[form] = (size / args.spectra, args.spectra / read_seconds, args.spectra / write_seconds)

    baseline_bytes, baseline_read, _ = results["json_text"]
    for form, (bytes_per, read_rate, write_rate) in results.items():
        print(f"storage_bytes_per_spectrum_{form}: {bytes_per:.0f} bytes")
        print(f"storage_gb_per_10m_spectra_{form}: {bytes_per * 1e7 / 1e9:.1f} GB")
        print(f"storage_read_decode_spectra_per_second_{form}: {read_rate:.0f} spectra/s")
        print(f"storage_copy_write_spectra_per_second_{form}: {write_rate:.0f} spectra/s")
    bytes_per, read_rate, _ = results["float32_bytea"]
    print(f"storage_size_ratio_json_over_float32_bytea: {baseline_bytes / bytes_per:.2f} x")
    print(f"storage_read_speedup_float32_bytea_over_json: {read_rate / baseline_read:.2f} x")


if __name__ == "__main__":
    main()
