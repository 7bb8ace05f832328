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
