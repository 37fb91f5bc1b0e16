"""Prometheus metrics, one `CollectorRegistry` per app (tests build many apps)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The counters `/metrics` exposes; gauges read their value when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decodes = Counter("latent_gallery_decodes", "Images decoded by the model", registry=r)
        self.thumbnail_decodes = Counter(
            "latent_gallery_thumbnail_decodes",
            "Of those, thumbnails decoded by the thumbnail decoder", registry=r,
        )  # fmt: skip
        self.decode_seconds = Histogram(
            "latent_gallery_decode_seconds", "Seconds per decoder forward pass (one batch)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "latent_gallery_decode_batch_size", "Latents per decoder forward pass",
            buckets=(1, 2, 4, 8, 16, 32), registry=r,
        )  # fmt: skip
        self.cache_hits = Counter("latent_gallery_cache_hits", "PNG cache hits", registry=r)
        self.cache_misses = Counter("latent_gallery_cache_misses", "PNG cache misses", registry=r)
        self.coalesced = Counter(
            "latent_gallery_coalesced_requests", "Renders that joined one already in flight",
            registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "latent_gallery_rejected_requests", "Requests refused under load",
            ["reason"], registry=r,
        )  # fmt: skip
        self.uploads = Counter("latent_gallery_uploads", "Images stored", registry=r)
        self.cache_bytes = Gauge("latent_gallery_cache_bytes", "Bytes of cached PNGs", registry=r)
        self.queue_depth = Gauge(
            "latent_gallery_queue_depth", "Decode jobs waiting for the model", registry=r
        )
        self.encode_queue_depth = Gauge(
            "latent_gallery_encode_queue_depth",
            "Uploads accepted and not yet stored or failed (waiting or encoding)",
            registry=r,
        )

    def watch(self, cache_bytes: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        """Read the gauges from these functions at scrape time."""
        self.cache_bytes.set_function(cache_bytes)
        self.queue_depth.set_function(queue_depth)
