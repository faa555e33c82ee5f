"""The search page and JSON API that ``hotdog serve`` runs (Starlette on uvicorn)."""

from hotdog_dagster.serve.app import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_PORT, create_app

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_PORT", "create_app"]
