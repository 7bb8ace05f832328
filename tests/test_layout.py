import subprocess
import sys

from tests.conftest import REPO


def test_mlcore_imports_no_web_stack():
    code = (
        "import sys, mlcore, pkgutil, importlib\n"
        "for info in pkgutil.walk_packages(mlcore.__path__, 'mlcore.'): importlib.import_module(info.name)\n"
        "web = {'django', 'rest_framework', 'celery', 'materials', 'screening'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in web)\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_declares_the_full_stack():
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "web", "worker", "worker-gpu"}
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    assert "train" in " ".join(services["worker-gpu"]["command"])
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert set(compose["volumes"]) >= {"postgres-data", "media"}


def _pins(path) -> dict:
    """``name: (version, marker)`` of each ``name==version`` line of a requirements file."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = (spec.version, requirement.marker)
    return pins


def test_the_lock_pins_every_top_level_requirement_at_the_same_version():
    top = _pins(REPO / "requirements.txt")
    lock, gpu = _pins(REPO / "requirements.lock"), _pins(REPO / "requirements-gpu.lock")
    stale = {name: (version, lock.get(name, ("missing",))[0]) for name, (version, _) in top.items()}
    assert {name: pair for name, pair in stale.items() if pair[0] != pair[1]} == {}, "run `make lock`"
    assert len(lock) > 3 * len(top)  # the whole tree, not just the top level
    # The GPU image's lock is the same tree with TensorFlow's CUDA build of the same version.
    assert gpu["tensorflow"][0] == top["tensorflow-cpu"][0] and "tensorflow-cpu" not in gpu
    assert any(name.startswith("nvidia-") for name in gpu)
    shared = {name: pin for name, pin in top.items() if name != "tensorflow-cpu"}
    assert {name: gpu[name][0] for name in shared} == {name: version for name, (version, _) in shared.items()}


def test_make_install_and_the_image_install_the_lock():
    assert "pip install --quiet -r requirements.lock" in (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG REQUIREMENTS=requirements.lock" in dockerfile and "pip install -r ${REQUIREMENTS}" in dockerfile


def test_the_running_environment_is_the_locked_one():
    from importlib.metadata import PackageNotFoundError, version

    wrong = {}
    for name, (pinned, marker) in _pins(REPO / "requirements.lock").items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert wrong == {}, "the environment differs from requirements.lock: run `make install`"
