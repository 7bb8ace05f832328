"""Starting background work (``materials/jobs.py``): tasks are named and routed by name,
only ``jobs.py`` reaches them, and settings are the only reader of the environment."""

from __future__ import annotations

import ast

from django.conf import settings

from tests.conftest import REPO

PRODUCT = ("materials", "mlcore", "screening")


def product_files():
    for root in PRODUCT:
        for path in sorted((REPO / root).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def imported_modules(path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_task_is_named_materials_dot_its_function_and_routed_by_that_name():
    from materials import jobs

    jobs.task(jobs.TRAIN_MODEL)  # registers the modules of CELERY_IMPORTS, as a worker does
    by_module: dict[str, list[str]] = {}
    for name, task in jobs.app.tasks.items():
        module = getattr(task.run, "__module__", "")
        if module.startswith("materials."):
            assert name == f"materials.{task.run.__name__}", f"{module}.{task.run.__name__} is named {name!r}"
            by_module.setdefault(module, []).append(name)
    assert set(by_module) == set(settings.CELERY_IMPORTS)
    for name in (jobs.TRAIN_MODEL, jobs.CLASSIFY_ALL, jobs.PROMOTE_MODEL, jobs.SCREEN_RELEASE, jobs.INGEST_MP):
        assert jobs.task(name).name == name
    registered = {name for name in jobs.app.tasks if name.startswith("materials.")}
    assert set(settings.CELERY_TASK_ROUTES) <= registered
    assert {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} <= set(settings.CELERY_TASK_QUEUES_ALL)


def test_only_jobs_reaches_the_tasks():
    """Domain code, entry points and the admin start work through ``materials.jobs``."""
    importers = sorted(
        str(path.relative_to(REPO))
        for path in product_files()
        if "tasks" not in path.relative_to(REPO).parts
        and any(name == "materials.tasks" or name.startswith("materials.tasks.") for name in imported_modules(path))
    )
    assert importers == ["materials/jobs.py"]


def test_settings_are_the_only_reader_of_the_environment():
    readers = []
    for path in product_files():
        if path.relative_to(REPO).as_posix() == "screening/settings.py":
            continue
        text = path.read_text()
        if "os.getenv(" in text or "os.environ.get(" in text or "os.environ[" in text:
            readers.append(str(path.relative_to(REPO)))
    assert readers == []
