"""A local stand-in for the Materials Project API, for tests.

It speaks the part of MP's REST API that ``mp_api.client.MPRester`` uses when we
ingest spectra, over real HTTP on 127.0.0.1 (an ephemeral port, in a thread):

* ``GET /heartbeat``: ``db_version``, the emmet ``version`` and the access-controlled
  batch ids, which MPRester reads when it is built;
* ``GET /materials/summary/``: summary documents, filtered by ``material_ids``;
* ``GET /materials/xas/``: XAS documents, filtered by ``task_ids``, ``edge``,
  ``spectrum_type`` and ``absorbing_element``.

Responses have MP's shape, ``{"data": [...], "meta": {"total_doc": ..., ...}}``, honour
``_fields``, ``_limit`` and ``_skip`` (the client pages with them), and the documents are
built with emmet-core's own models (``SummaryDoc``, ``XASDoc``) and serialised the way the
API serialises them, so the client parses them exactly as it parses MP's.

What is served, and where it comes from (all of it real data from ``data/``, but not
all of it Materials Project data; the XANES of most elements are OUR FEFF10
computations standing in for MP's):

===========  =======  ====================================  ============================================
mp-id        formula  structure                             K-edge XANES served
===========  =======  ====================================  ============================================
mp-24850     LiCoO2   MP (``LiCoO2_mp24850.cif``)           Co: MP's own computed spectrum
                                                            (``reference/licoo2_co_k_mp.json``); no Li,
                                                            no O (not bundled), so it is incomplete
mp-390       TiO2     MP (Lightshow POSCAR)                 Ti: FEFF on MP's grid (Lightshow); no O, so
                                                            it lacks exactly one element's spectrum
mp-2657,     TiO2,    MP (Lightshow POSCARs)                O and Ti: our FEFF10 computations
mp-430,      TiO2,                                          (``spectra/spectra.jsonl``) on the AMCSD
mp-458       Ti2O3                                          mineral structure of the same compound
mp-504,      CuS,     the AMCSD mineral structure (larixite every element: our FEFF10 computations on
mp-5342,     GaAgS2,  copy), standing in for MP's           that structure
mp-541837,   Bi2Se3,
mp-5229      SrTiO3
===========  =======  ====================================  ============================================

The ICSD ids in each summary's ``database_IDs`` are the ones the Materiae catalogue
lists for that mp-id (``labels/materiae_labels.csv``).

Faults are switched on per server (``server.faults``) and every request is logged
(``server.log``), so a test can see what the client really sent and received.
"""

from __future__ import annotations

import copy
import csv
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.conftest import DATA

API_KEY = "0123456789abcdefghijABCDEFGHIJ01"  # mp-api insists on 32 characters
DB_VERSION = "2019.05"  # the MP release the paper used
LAST_UPDATED = "2019-05-01T00:00:00"

COMPLETE = ("mp-2657", "mp-430", "mp-458", "mp-504", "mp-5342", "mp-541837", "mp-5229")
INCOMPLETE = {"mp-390": ["O"], "mp-24850": ["Li", "O"]}  # mp-id → elements with no spectrum
ALL_MP_IDS = COMPLETE + tuple(INCOMPLETE)

_MP_STRUCTURES = {
    "mp-24850": "LiCoO2_mp24850.cif",
    "mp-390": "mp-390.POSCAR",
    "mp-2657": "mp-2657.POSCAR",
    "mp-430": "mp-430.POSCAR",
    "mp-458": "mp-458.POSCAR",
}
_AMCSD_STRUCTURES = {"mp-504": 65, "mp-5342": 15452, "mp-541837": 13195, "mp-5229": 8446}

ROUTES = {"/heartbeat": "heartbeat", "/materials/summary/": "summary", "/materials/xas/": "xas"}


# --- The documents -------------------------------------------------------------------


def _structure(mp_id: str):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    if mp_id in _MP_STRUCTURES:
        path = DATA / "structures" / _MP_STRUCTURES[mp_id]
        if path.suffix == ".cif":
            return CifParser(str(path)).parse_structures(primitive=True)[0]
        return Structure.from_file(str(path))
    from larixite.amcsd import get_amcsd

    cif = get_amcsd().get_cif(_AMCSD_STRUCTURES[mp_id])
    return CifParser.from_str(cif.ciftext).parse_structures(primitive=True)[0]


def _spectra(mp_id: str) -> dict[str, tuple[list[float], list[float]]]:
    """Element → (energies, mu), from the bundled files named in the module docstring."""
    if mp_id == "mp-24850":
        record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
        return {"Co": (record["energies_ev"], record["mu"])}
    if mp_id == "mp-390":
        rows = [line.split() for line in (DATA / "reference" / "anatase_ti_k_feff_mp.txt").read_text().splitlines()]
        rows = [row for row in rows if row and not row[0].startswith("#")]
        return {"Ti": ([float(row[0]) for row in rows], [float(row[1]) for row in rows])}
    spectra = {}
    for line in (DATA / "spectra" / "spectra.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["mp_id"] == mp_id:
            spectra.setdefault(record["element"], (record["energies_ev"], record["mu"]))
    return spectra


def _icsd_ids() -> dict[str, list[int]]:
    with open(DATA / "labels" / "materiae_labels.csv", newline="") as handle:
        return {
            row["mp_id"]: json.loads(row["icsd_ids"] or "[]")
            for row in csv.DictReader(handle)
            if row["mp_id"] in ALL_MP_IDS
        }


@cache
def documents() -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """Summary documents by mp-id, and XAS documents by mp-id and element, as JSON.

    Built once per process with emmet-core's models (the slow part is pymatgen's
    symmetry analysis), then copied by each server.
    """
    from emmet.core.summary import SummaryDoc, XASSearchData
    from emmet.core.xas import XASDoc
    from pymatgen.analysis.xas.spectrum import XAS

    icsd = _icsd_ids()
    summaries, xas = {}, {}
    for mp_id in ALL_MP_IDS:
        structure = _structure(mp_id)
        spectra = _spectra(mp_id)
        xas[mp_id] = {}
        for element, (energies, mu) in sorted(spectra.items()):
            spectrum = XAS(energies, mu, structure, element, edge="K", spectrum_type="XANES")
            doc = XASDoc.from_spectrum(spectrum, task_id=mp_id, last_updated=LAST_UPDATED)
            xas[mp_id][element] = doc.model_dump(mode="json")
        summary = SummaryDoc.from_structure(
            structure,
            material_id=mp_id,
            task_ids=[mp_id],
            deprecated=False,
            theoretical=False,
            database_IDs={"icsd": [f"icsd-{number}" for number in icsd.get(mp_id, [])]},
            xas=[XASSearchData(edge="K", absorbing_element=element, spectrum_type="XANES") for element in spectra],
            last_updated=LAST_UPDATED,
        )
        summaries[mp_id] = summary.model_dump(mode="json")
    return summaries, xas


def legacy_id(value: str) -> str:
    """``mp-aaaaadyf`` or ``mp-dyf`` (emmet's AlphaID forms the client sends) → ``mp-2657``."""
    from emmet.core.mpid import AlphaID

    return AlphaID(value.strip()).string


# --- Faults and the request log --------------------------------------------------------


@dataclass
class Faults:
    """What the server gets wrong, switched on by a test before or during a run.

    ``rate_limit`` and ``server_error`` map a route (``"summary"``, ``"xas"``,
    ``"heartbeat"``) to how many of its next requests are answered 429 (with
    ``Retry-After``) or 500 instead; a count of -1 answers every request so.
    """

    rate_limit: dict[str, int] = field(default_factory=dict)
    retry_after: str = "1"
    server_error: dict[str, int] = field(default_factory=dict)
    missing_spectra: set[tuple[str, str]] = field(default_factory=set)  # (mp-id, element) left out
    truncated_spectrum: set[str] = field(default_factory=set)  # mp-ids whose first XAS doc loses points
    not_json: set[str] = field(default_factory=set)  # routes whose 200 answer is not JSON
    delay_s: float = 0.0  # before answering each data request
    # route → how many of its requests are answered before the rest wait until ``release()``:
    # a run held there is stopped at a known point (a test kills it, or restarts its broker)
    hold_after: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    route: str
    query: dict
    status: int
    api_key: str
    at: float  # time.monotonic() when the request arrived


class MPTestServer:
    """The server: ``with MPTestServer() as server: ... server.url ...``."""

    def __init__(self, db_version: str = DB_VERSION, api_key: str = API_KEY, port_containing: str = ""):
        self.db_version, self.api_key = db_version, api_key
        self.summaries, self.xas = copy.deepcopy(documents())
        self.faults = Faults()
        self.log: list[Served] = []
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._held = 0
        self._httpd = _bind(_handler_for(self), port_containing)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> MPTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def statuses(self, route: str) -> list[int]:
        """The status of every answer on ``route``, in order."""
        with self._lock:
            return [served.status for served in self.log if served.route == route]

    def held(self) -> int:
        """How many requests have been held by ``faults.hold_after`` (still waiting or released)."""
        with self._lock:
            return self._held

    def release(self) -> None:
        """Answer every held request, and hold no more."""
        with self._lock:
            self.faults.hold_after = {}
        self._gate.set()

    def _hold(self, route: str) -> bool:
        with self._lock:
            left = self.faults.hold_after.get(route)
            if left is None:
                return False
            if left > 0:
                self.faults.hold_after[route] = left - 1
                return False
            self._held += 1
            return True

    def counts(self) -> Counter:
        with self._lock:
            return Counter((served.route, served.status) for served in self.log)

    # -- answering ---------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str], api_key: str) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one GET; logs it."""
        arrived = time.monotonic()
        route = ROUTES.get(path) or ROUTES.get(path + "/")
        status, headers, body = self._answer(route, query)
        with self._lock:
            self.log.append(Served(route or path, query, status, api_key, arrived))
        return status, headers, body

    def _take(self, faults: dict[str, int], route: str) -> bool:
        with self._lock:
            left = faults.get(route, 0)
            if left == 0:
                return False
            if left > 0:
                faults[route] = left - 1
            return True

    def _answer(self, route: str | None, query: dict[str, str]) -> tuple[int, dict, bytes]:
        if route is None:
            return 404, {}, _json({"detail": "Not Found"})
        if self._hold(route):
            self._gate.wait()
        if route != "heartbeat" and self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        if self._take(self.faults.rate_limit, route):
            return 429, {"Retry-After": self.faults.retry_after}, _json({"detail": "Too Many Requests"})
        if self._take(self.faults.server_error, route):
            return 500, {}, _json({"detail": "Internal Server Error"})
        if route == "heartbeat":
            from emmet.core import __version__ as emmet_version

            heartbeat = {"db_version": self.db_version, "version": emmet_version, "access_controlled_batch_ids": []}
            return 200, {}, _json({"status": "OK", **heartbeat})
        if route in self.faults.not_json:
            return 200, {}, b'{"data": [{"material_id": "mp-2657", "structure": {"lattice": '
        docs = self._summaries(query) if route == "summary" else self._xas(query)
        return 200, {}, _json(_page(docs, query))

    def _ids(self, query: dict[str, str], name: str) -> list[str] | None:
        if name not in query:
            return None
        return [legacy_id(value) for value in query[name].split(",") if value.strip()]

    def _summaries(self, query: dict[str, str]) -> list[dict]:
        wanted = self._ids(query, "material_ids")
        docs = [doc for mp_id, doc in self.summaries.items() if wanted is None or mp_id in wanted]
        if "deprecated" in query:
            flag = query["deprecated"].lower() == "true"
            docs = [doc for doc in docs if doc["deprecated"] == flag]
        return docs

    def _xas(self, query: dict[str, str]) -> list[dict]:
        wanted = self._ids(query, "task_ids")
        docs = []
        for mp_id, by_element in self.xas.items():
            if wanted is not None and mp_id not in wanted:
                continue
            for position, (element, doc) in enumerate(sorted(by_element.items())):
                if (mp_id, element) in self.faults.missing_spectra:
                    continue
                if any(query.get(key, doc[key]) != doc[key] for key in ("edge", "spectrum_type", "absorbing_element")):
                    continue
                if mp_id in self.faults.truncated_spectrum and position == 0:
                    doc = copy.deepcopy(doc)
                    doc["spectrum"]["y"] = doc["spectrum"]["y"][:-7]  # fewer intensities than energies
                docs.append(doc)
        return docs


def _bind(handler, port_containing: str = "") -> ThreadingHTTPServer:
    """A server on an ephemeral port, or on the first free port whose digits contain
    ``port_containing`` (a test can put chosen digits into every URL the client sees)."""
    if not port_containing:
        return ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for port in range(1024, 65536):
        if port_containing in str(port):
            try:
                return ThreadingHTTPServer(("127.0.0.1", port), handler)
            except OSError:
                continue
    raise RuntimeError(f"no free port contains {port_containing!r}")


def _page(docs: list[dict], query: dict[str, str]) -> dict:
    """Apply ``_skip``/``_limit``/``_fields`` the way MP's API does."""
    skip, limit = int(query.get("_skip", 0)), int(query.get("_limit", 100))
    fields = query.get("_fields")
    page = docs[skip : skip + limit]
    if fields and query.get("_all_fields", "false").lower() != "true":
        keep = fields.split(",")
        page = [{key: doc[key] for key in keep if key in doc} for doc in page]
    return {"data": page, "meta": {"total_doc": len(docs), "max_limit": 1000, "db_version": DB_VERSION}}


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


def _handler_for(server: MPTestServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            status, headers, body = server.answer(parts.path, query, self.headers.get("x-api-key", ""))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a held request whose client was killed meanwhile

        def log_message(self, format, *args):  # keep pytest's output clean
            pass

    return Handler
