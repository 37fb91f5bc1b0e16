"""`/healthz` (are the models loaded?) and `/metrics` (Prometheus text).

Neither names a path, a file or a model location: why a load failed is in the server's log."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .gallery import get_gallery
from .unavailable import ModelUnavailableError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """200 once the models are loaded (loading them on first call, or retrying a failed load
    when its backoff is over), with the encode plan once the first encode has measured it
    (null before: measured at load, it held a restarted server's first renders back); 503
    while they are not (the log says why)."""
    gallery = get_gallery()
    try:
        codec = gallery.codec_host.require()
    except ModelUnavailableError as exc:
        return {"status": "unavailable", "cause": str(exc)}, 503
    return {
        "status": "ok",
        "latent_space": codec.decoder.space.name,
        "method": codec.settings.method,
        "correction": codec.correction is not None,
        "encode_plan": plan.as_dict() if (plan := codec.measured_plan) else None,
        "queue_depth": gallery.renderer.queue_depth,
        "cache_bytes": gallery.cache.bytes,
    }, 200


@bp.get("/metrics")
def metrics() -> Response:
    """All counters of this app in the Prometheus text format."""
    registry = get_gallery().metrics.registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
