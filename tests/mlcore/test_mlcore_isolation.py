"""mlcore stays framework-free: no web stack in its source or in its import graph."""

import ast
import subprocess
import sys
from pathlib import Path

import mlcore

FORBIDDEN = ("django", "rest_framework", "celery", "materials", "screening")
PACKAGE = Path(mlcore.__file__).resolve().parent


def test_no_module_of_mlcore_imports_the_web_stack():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(PACKAGE.rglob("*.py"))) >= 15  # the scan really saw the package


def test_importing_every_mlcore_module_loads_no_web_framework():
    script = (
        "import importlib, pkgutil, sys, mlcore\n"
        "for info in pkgutil.walk_packages(mlcore.__path__, 'mlcore.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_non_cnn_models_load_without_tensorflow():
    script = "import sys, mlcore.models, mlcore.evaluate, mlcore.preprocess\nprint('tensorflow' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
