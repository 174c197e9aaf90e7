"""``timam serve``: a local web page and JSON API to search an image index (FastAPI + uvicorn)."""
