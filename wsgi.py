"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` (see gunicorn.conf.py)."""

from webapp import create_app

app = create_app()
