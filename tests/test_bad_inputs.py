"""The bad-input corpus (``tests/bad_inputs/``, described in its README) through every way in.

Each file goes through the command line (``call_command`` → ``CommandError`` naming the
problem) and the API (a 4xx whose body names it), release zips also through the web
upload form, and every table of every app is counted before and after: nothing changes,
and no file is stored. A few good inputs go through the same routes first, so that a
refusal is known to be the input's fault and not the route's.

The API's spectrum checks need a production model: the module trains a real one
(``tests.api_support.trained_world``, an SVM-sg on 40 bundled compounds).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from tests.api_support import DATA, THROTTLE_OFF, token_client, trained_world_fixture  # noqa: F401

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CLASSIFY = "/api/classify/"
SCREENINGS = "/api/screenings/"
# A two-column spectrum file needs its element; the model (SVM-sg) needs a space group.
SPECTRUM_FIELDS = {"element": "Co", "formula": "LiCoO2", "space_group": 166}
SPECTRUM_ARGS = ["--element", "Co", "--formula", "LiCoO2", "--space-group", "166"]

# file → what the error says: one text for both routes, or (command line, API).
SPECTRA = {
    "spectrum_nan.json": "mu[5] is NaN",
    "spectrum_infinite.json": "mu[7] is infinite",
    "spectrum_too_few_points.json": "5 points; at least 10 are needed",
    "spectrum_mismatched_lengths.json": "97 mu values but 100 energies",
    "spectrum_unknown_element.json": "unknown absorbing element 'Xx'",
    "spectrum_not_a_number.json": "item 3 is 'abc'",
    "spectrum_outside_k_edge.json": "are outside the Co K-edge region",
    "spectrum_unsorted.json": "energy 7715.67 eV at index 11 decreases",
    "spectrum_element_not_in_formula.json": "Co is not in the material's composition",
    "spectrum_malformed.json": ("not valid JSON (Expecting value at line 2)", "JSON parse error - Expecting value"),
    "spectrum_not_an_object.json": "expected a JSON object with a 'spectra' field",
    "spectrum_no_spectra.json": "give at least one spectrum",
    "spectra_oversized.json": ("bytes; the limit is 2097152 bytes", "over the size limit of 2097152 bytes"),
    "spectrum_unsorted.csv": "energy 7717.87 eV at index 26 decreases",
    "spectrum_nan.csv": "mu[12] is NaN",
    "spectrum_not_a_number.csv": "line 4: mu is not a number ('0.03x')",
    "spectrum_no_mu_column.csv": "line 1: header 'energy, intensity_a, counts' has no mu column",
    "spectrum_no_data_rows.csv": "no data rows",
    "spectrum_utf16.csv": "UTF-16 text (byte-order mark); save the file as UTF-8",
    "spectrum_binary.csv": "not a text file (binary content)",
    "spectrum_wrong_element.csv": "line 2: unknown absorbing element 'Zz'",
    "spectrum_duplicate_energies.xdi": "energy 7722.31 eV at index 40 repeats",
    "spectrum_l_edge.xdi": "XDI header gives the L3 edge; only K-edge spectra are accepted",
    "spectrum_no_energy_column.xdi": "XDI header has no 'energy' column",
    "spectrum_no_mu_column.xdi": "XDI file has no mu column",
    "spectrum_unknown_element.xdi": "unknown absorbing element 'Qq'",
    "spectrum_missing_value.xdi": "line 38: no value for column 'mutrans'",
}
# Structures given with a spectrum to classify (``--structure`` / the ``structure`` part).
STRUCTURES = {
    "structure_not_a_cif.cif": "cannot read structure_not_a_cif.cif: Invalid CIF file with no structures",
    "structure_empty.cif": ("cannot read structure_empty.cif", "The submitted file is empty"),
    "structure_partial_occupancy.cif": "partial occupancy (disordered structure)",
    "structure_truncated.cif": "cannot read structure_truncated.cif",
    "structure_unknown_element.cif": "elements beyond Pu: Xq",
}
# The same CIFs inside a release to screen: rejected one by one, with the reason.
# (A disordered structure is no bad input in a release: it is ranked by the prior alone,
# tests/test_screen_release.py.)
STRUCTURES_IN_A_RELEASE = {
    "structure_not_a_cif.cif": "cannot parse CIF",
    "structure_empty.cif": "cannot parse CIF",
    "structure_truncated.cif": "cannot parse CIF",
    "structure_unknown_element.cif": "unknown element(s) Xq",
}
# Label files: (catalogue, error). There is no API for importing labels: command line only.
LABELS = {
    "labels_missing_columns.csv": ("materiae", "missing column(s) mp_id, icsd_ids, soc_topo_class, nsoc_topo_class"),
    "labels_latin1.csv": ("materiae", "not UTF-8 text (bad byte at offset 168)"),
    "labels_utf16.csv": ("materiae", "not UTF-8 text (bad byte at offset 0)"),
    "labels_empty.csv": ("materiae", "missing column(s) materiae_id"),
    "labels_bad_space_group.csv": ("materiae", "labels_bad_space_group.csv:2: space group 999 is outside 1-230"),
    "labels_unknown_class.csv": ("materiae", "unknown materiae class 'SUPER_TOPO'"),
    "labels_bad_formula.csv": ("materiae", "formula 'Qx2Zz3' names unknown element(s) Qx, Zz"),
    "labels_tqc_bad_icsd.csv": ("tqc", "icsd_id 'not-a-number' is not an integer"),
    "labels_arsenal_no_class.txt": ("arsenal", "cannot tell the Arsenal class from the file name"),
}
# Releases to screen: one reader refuses them (materials.screening.release), so the command
# line, the API and the upload form give the same message (None: the route does not apply).
RELEASES = {
    "release_not_a_zip.zip": dict.fromkeys(("cli", "api", "web"), "release_not_a_zip.zip: not a readable zip file"),
    "release_truncated.zip": dict.fromkeys(("cli", "api", "web"), "release_truncated.zip: not a readable zip file"),
    "release_no_cifs.zip": dict.fromkeys(("cli", "api", "web"), "release_no_cifs.zip: no .cif files found"),
    "release_encrypted.zip": dict.fromkeys(
        ("cli", "api", "web"), "release_encrypted.zip: LiCoO2.cif is encrypted; send an unencrypted zip"
    ),
    "release_zip_bomb.zip": dict.fromkeys(("cli", "api", "web"), "this looks like a zip bomb"),
    # An upload limit: a file on the command line is not an upload.
    "release_oversized.zip": {
        "cli": None,
        "api": "bytes; the limit is 65536 bytes",
        "web": "bytes; the limit is 65536 bytes",
    },
}
GENERATED = {"spectra_oversized.json", "release_zip_bomb.zip", "release_oversized.zip"}
OVERSIZED_UPLOAD_LIMIT = 64 * 1024


# --- The generated members of the corpus -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The committed corpus plus the files too big to commit, generated here."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    for path in CORPUS.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    # A zip bomb: 600 MiB of zeros in one member, a few MB compressed (ratio ~230).
    bomb = zipfile.ZipFile(folder / "release_zip_bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1)
    with bomb, bomb.open("icsd_000001.cif", "w", force_zip64=True) as member:
        zeros = bytes(1 << 20)
        for _ in range(600):
            member.write(zeros)
    # Over the upload limit the test sets (64 KiB): incompressible bytes, stored.
    with zipfile.ZipFile(folder / "release_oversized.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("icsd_000002.cif", os.urandom(OVERSIZED_UPLOAD_LIMIT + 4096))
    # A request body over DATA_UPLOAD_MAX_MEMORY_SIZE (2 MiB by default): a 150 000-point spectrum.
    points = 150_000
    body = {
        "spectra": {"Co": {"energies_ev": [7700 + i * 1e-3 for i in range(points)], "mu": [0.5] * points}},
        **{k: v for k, v in SPECTRUM_FIELDS.items() if k != "element"},
    }
    (folder / "spectra_oversized.json").write_text(json.dumps(body))
    assert (folder / "spectra_oversized.json").stat().st_size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return folder


# --- What must not change ----------------------------------------------------------------------------


def database_counts() -> dict[str, int]:
    """Rows in every table of every installed app (many-to-many tables included)."""
    return {model._meta.label: model._default_manager.count() for model in apps.get_models(include_auto_created=True)}


def stored_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


@pytest.fixture
def api(trained_world, db):
    return token_client(trained_world.user_token)


@pytest.fixture
def prior(trained_world, db):
    """The composition + symmetry prior a screening ranks with (rolled back after the test)."""
    from unittest import mock

    from materials.learning import training

    with mock.patch("materials.tasks.base.enqueue_on_commit"):
        run = training.request_training("type-only")
    training.train_model_version(run.pk)


@pytest.fixture
def web(trained_world, db):
    client = Client()
    client.force_login(trained_world.user)
    return client


def expected_for(expected, route: str) -> str:
    if isinstance(expected, tuple):
        return expected[0] if route == "cli" else expected[1]
    return expected


def answer_text(response) -> str:
    return json.dumps(response.json(), ensure_ascii=False)


# --- The routes --------------------------------------------------------------------------------------


def classify_cli(path: Path, structure: Path | None = None) -> str:
    args = [str(path)] + ([] if path.suffix == ".json" else SPECTRUM_ARGS)
    if structure is not None:
        args = [str(path), "--element", "Co", "--structure", str(structure)]
    out = StringIO()
    call_command("classify", *args, stdout=out)
    return out.getvalue()


def classify_api(client, path: Path):
    if path.suffix == ".json":
        return client.post(CLASSIFY, data=path.read_bytes(), content_type="application/json")
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="text/plain")
    return client.post(CLASSIFY, data={"file": upload, **SPECTRUM_FIELDS}, format="multipart")


def classify_api_with_structure(client, spectrum_csv: bytes, structure: Path):
    return client.post(
        CLASSIFY,
        data={
            "file": SimpleUploadedFile("co.csv", spectrum_csv, content_type="text/csv"),
            "element": "Co",
            "structure": SimpleUploadedFile(structure.name, structure.read_bytes()),
        },
        format="multipart",
    )


def good_spectrum_csv() -> bytes:
    record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    rows = "\n".join(f"{e},{m}" for e, m in zip(record["energies_ev"], record["mu"], strict=True))
    return f"energy,mu\n{rows}\n".encode()


def good_inputs(folder: Path) -> dict[str, Path]:
    """LiCoO2's Co K edge as JSON, CSV and XDI, and its CIF with oxidation states (as ICSD writes)."""
    record = json.loads((DATA / "reference" / "licoo2_co_k_mp.json").read_text())
    pairs = list(zip(record["energies_ev"], record["mu"], strict=True))
    files = {
        "json": folder / "good.json",
        "csv": folder / "good.csv",
        "xdi": folder / "good.xdi",
        "cif": folder / "good_oxidation_states.cif",
    }
    files["json"].write_text(
        json.dumps(
            {
                "spectra": {"Co": {"energies_ev": record["energies_ev"], "mu": record["mu"]}},
                "formula": "LiCoO2",
                "space_group": 166,
            }
        )
    )
    files["csv"].write_bytes(good_spectrum_csv())
    header = ["# XDI/1.0", "# Column.1: energy eV", "# Column.2: mutrans", "# Element.symbol: Co", "# Element.edge: K"]
    files["xdi"].write_text("\n".join([*header, "#----", *(f"{e} {m}" for e, m in pairs)]) + "\n")
    cif = (DATA / "structures" / "LiCoO2_mp24850.cif").read_text()
    cif = cif.replace(
        "loop_\n _atom_site_type_symbol",
        "loop_\n _atom_type_symbol\n _atom_type_oxidation_number\n  Li+  1\n  Co3+  3\n  O2-  -2\n"
        "loop_\n _atom_site_type_symbol",
    )
    for plain, charged in (("  Li  Li1", "  Li+  Li1"), ("  O  O", "  O2-  O"), ("  Co  Co4", "  Co3+  Co4")):
        cif = cif.replace(plain, charged)
    files["cif"].write_text(cif)
    return files


# --- The corpus is complete and documented --------------------------------------------------------------


def test_every_corpus_file_is_exercised_and_listed_in_the_readme():
    committed = {path.name for path in CORPUS.iterdir()} - {"README.md"}
    covered = set(SPECTRA) | set(STRUCTURES) | set(LABELS) | set(RELEASES)
    assert committed | GENERATED == covered
    assert GENERATED.isdisjoint(committed), "generated files are not committed"
    readme = (CORPUS / "README.md").read_text()
    missing = sorted(name for name in covered if f"`{name}`" not in readme)
    assert missing == []
    assert all(path.stat().st_size < 8 * 1024 for path in CORPUS.iterdir()), "keep committed files tiny"


# --- Good inputs pass the same routes ---------------------------------------------------------------------


def test_good_inputs_pass_every_route(api, tmp_path):
    from materials.screening import ReleaseFile, parse_cif

    good = good_inputs(tmp_path)
    for kind in ("json", "csv", "xdi"):
        assert "P(topological)" in classify_cli(good[kind])
        response = classify_api(api, good[kind])
        assert response.status_code == 200, (kind, response.content)
        assert response.json()["elements"] == ["Co"]
    # Species with oxidation states (Co3+) are their elements, in both places a CIF is read.
    assert "P(topological)" in classify_cli(good["csv"], structure=good["cif"])
    response = classify_api_with_structure(api, good_spectrum_csv(), good["cif"])
    assert response.status_code == 200, response.content
    assert response.json()["space_group"] == 166 and set(response.json()["composition"]) == {"Li", "Co", "O"}
    parsed = parse_cif(ReleaseFile(good["cif"].name, good["cif"].read_text()))
    assert sorted(str(e) for e in parsed.structure.composition.elements) == ["Co", "Li", "O"]


# --- Bad inputs: refused, named, nothing changed -------------------------------------------------------------


def cases():
    for name, expected in SPECTRA.items():
        for route in ("cli", "api"):
            yield pytest.param(route, name, expected_for(expected, route), id=f"{route}-{name}")
    for name, expected in STRUCTURES.items():
        for route in ("cli", "api"):
            yield pytest.param(route, name, expected_for(expected, route), id=f"{route}-{name}")
    for name, (_catalogue, expected) in LABELS.items():
        yield pytest.param("cli", name, expected, id=f"cli-{name}")
    for name, routes in RELEASES.items():
        for route, expected in routes.items():
            if expected is not None:
                yield pytest.param(route, name, expected, id=f"{route}-{name}")


@pytest.mark.parametrize("route, name, expected", list(cases()))
def test_a_bad_input_is_refused_with_an_error_naming_the_problem_and_changes_nothing(
    route, name, expected, corpus, api, web, settings, tmp_path
):
    path = corpus / name
    if name == "release_oversized.zip":
        settings.MAX_UPLOAD_BYTES = OVERSIZED_UPLOAD_LIMIT
    before, files_before = database_counts(), stored_files()

    if route == "cli":
        with pytest.raises(CommandError) as error:
            if name.startswith("spectr"):
                classify_cli(path)
            elif name.startswith("structure"):
                (tmp_path / "co.csv").write_bytes(good_spectrum_csv())
                classify_cli(tmp_path / "co.csv", structure=path)
            elif name.startswith("labels"):
                call_command("import_labels", str(path), "--catalogue", LABELS[name][0], "--no-progress")
            else:
                call_command("screen", str(path), "--name", "bad release", stdout=StringIO())
        message = str(error.value)
    elif route == "api":
        if name.startswith("spectr"):
            response = classify_api(api, path)
        elif name.startswith("structure"):
            response = classify_api_with_structure(api, good_spectrum_csv(), path)
        else:
            upload = SimpleUploadedFile(name, path.read_bytes(), content_type="application/zip")
            response = api.post(SCREENINGS, {"file": upload}, format="multipart")
        too_large = name in {"spectra_oversized.json", "release_oversized.zip"}
        assert response.status_code == (413 if too_large else 400), response.content[:500]
        message = answer_text(response)
    else:  # the web upload form
        upload = SimpleUploadedFile(name, path.read_bytes(), content_type="application/zip")
        response = web.post("/screenings/new/", {"name": "bad release", "release": upload})
        assert response.status_code == 200  # the form again, with its error
        message = " ".join(response.context["form"].errors.get("release", []))

    assert expected in message, message
    assert database_counts() == before
    assert stored_files() == files_before


@pytest.mark.parametrize("name, reason", list(STRUCTURES_IN_A_RELEASE.items()))
def test_a_bad_cif_in_a_release_is_rejected_by_name_and_creates_no_material(
    name, reason, corpus, api, prior, monkeypatch, tmp_path, django_capture_on_commit_callbacks
):
    """Inside a release, one bad CIF must not stop the screening of the others: the batch
    (the record of what was screened) lists it with the reason, and no material,
    spectrum or prediction comes of it."""
    from materials.models import ScreeningBatch
    from materials.tasks.classify import screen_release

    def screened_in_process(batch_id: int) -> None:
        screen_release.apply(args=[batch_id])

    unchanged = {label for label in database_counts() if label != "materials.ScreeningBatch"}

    # The command line, on a folder.
    release = tmp_path / "release"
    release.mkdir()
    (release / name).write_bytes((corpus / name).read_bytes())
    monkeypatch.setattr("materials.screening.background.start_screening_batch", screened_in_process)
    before = database_counts()
    out = StringIO()
    call_command("screen", str(release), "--name", "cli", "--output", str(tmp_path / "out.csv"), stdout=out)
    assert f"rejected {name}: {reason}" in out.getvalue()
    after = database_counts()
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert after["materials.ScreeningBatch"] == before["materials.ScreeningBatch"] + 1

    # The API, as an uploaded zip (enqueued on commit, then run here).
    monkeypatch.undo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, (corpus / name).read_bytes())
    with django_capture_on_commit_callbacks() as callbacks:
        upload = SimpleUploadedFile("release.zip", buffer.getvalue(), content_type="application/zip")
        response = api.post(SCREENINGS, {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content
    assert len(callbacks) == 1
    screened_in_process(response.json()["screening"])
    batch = ScreeningBatch.objects.get(pk=response.json()["screening"])
    assert batch.status == "done", batch.error
    assert [entry["file"] for entry in batch.rejected] == [name] and reason in batch.rejected[0]["reason"]
    final = database_counts()
    assert {k: final[k] for k in unchanged} == {k: before[k] for k in unchanged}
