"""Apps the HTTP, client and CLI tests serve (importable by subprocesses with tests/ on
PYTHONPATH, e.g. ``genq serve apps.http_app:app``)."""
