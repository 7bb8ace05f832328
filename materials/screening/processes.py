"""Start-up of spawned processes that run screening work (importable without Django)."""


def django_on_database(database_name) -> None:
    """Set Django up in a spawned process, on the caller's database (a test database too)."""
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = database_name
    django.setup()
