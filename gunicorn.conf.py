"""Gunicorn settings for Latent Gallery: one process, one model, many threads.

Run: `gunicorn -c gunicorn.conf.py wsgi:app`. The address, threads and log level come from
`webapp.settings.Settings` (`LATENT_GALLERY_BIND`, `_THREADS`, `_LOG_LEVEL`), as all settings do.
"""

import sys

from codec import load_codec
from webapp.settings import Settings

try:  # a bad setting stops the start here, in the master, with one line naming the variable
    _settings = Settings.from_env()
    load_codec(_settings.codec)
except ValueError as error:
    sys.exit(f"latent-gallery: {error}")
bind = _settings.bind

# One worker: every worker process would load its own copy of the model (and, on a GPU, its
# own CUDA context). Concurrency comes from threads: request threads parse uploads, read
# the cache and wait on renders, while the worker's single decode thread runs the model.
workers = 1
worker_class = "gthread"
threads = _settings.threads

# Never touch CUDA before the fork: the app is imported in the worker, not the master, and
# the model loads on first use in that worker (a CUDA context does not survive fork()).
preload_app = False

# The gthread worker's heartbeat runs on its main loop, so a long upload encode does not
# trip it; this only restarts a truly wedged worker. Renders carry their own deadline
# (LATENT_GALLERY_DECODE_TIMEOUT, 503 past it), so no request thread hangs on the model.
timeout = 120
graceful_timeout = 30
keepalive = 5

# Uploads are read into memory (never spooled to disk); bound the request line and headers.
limit_request_line = 8190
limit_request_fields = 100

_level = _settings.log_level.upper()
accesslog = "-"
loglevel = _level.lower()
# The app's loggers (webapp.*: model loading, storage repair) go to stderr with gunicorn's.
logconfig_dict = {
    "root": {"level": _level, "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}


def post_worker_init(worker) -> None:
    """Load the models in the worker, in the background, then warm the newest gallery page."""
    from webapp.warmup import start

    start(worker.wsgi)


def worker_exit(server, worker) -> None:
    """Finish the accepted uploads, then stop the worker's decode thread, before the
    interpreter exits."""
    from webapp.gallery import get_gallery

    get_gallery(worker.wsgi).close()
