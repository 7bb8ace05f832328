"""Bringing data in from outside sources.

``mp`` ingests the Materials Project's K-edge XANES (``manage.py ingest_mp``), helped by
``mp_http`` (configuration, throttle, retries), ``mp_documents`` (reading ids and
documents) and ``mp_store`` (storing). The topology catalogues are read by
``materials/ingest/catalogues.py`` and the bundled dataset by ``materials/ingest/bundled.py``.
"""
