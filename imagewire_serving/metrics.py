"""Prometheus metrics, one registry per server so several servers can live in one process (tests)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LOGGER = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The server's instruments: engines observe queueing, compute and streaming; the interceptor counts requests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "imagewire_requests", "Finished RPCs by method and status code.", ["method", "code"], registry=r
        )
        self.request_duration = Histogram(
            "imagewire_request_duration_seconds", "RPC wall time.", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inflight = Gauge("imagewire_inflight_requests", "RPCs being served now.", ["method"], registry=r)
        self.queue_duration = Histogram(
            "imagewire_queue_duration_seconds", "Time a request waited for the model.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute_duration = Histogram(
            "imagewire_compute_duration_seconds", "Model time of one batch or generation.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "imagewire_batch_size", "Requests run together.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.caption_batches = Counter(
            "imagewire_caption_batches", "Caption batches run, by the dtype of the copy of the model's weights that "
            "ran them (two copies where small batches run in another dtype).", ["model", "dtype"], registry=r,
        )
        self.queue_depth = Gauge("imagewire_queue_depth", "Requests waiting for the model.", ["model"], registry=r)
        self.first_byte = Histogram(
            "imagewire_time_to_first_byte_seconds", "From request to the first video byte sent.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.streamed_bytes = Counter(
            "imagewire_streamed_bytes", "Video bytes streamed to clients.", ["model"], registry=r
        )
        self.jobs = Gauge(
            "imagewire_jobs", "Video jobs: active (queued or running, watched), detached (queued or running, not "
            "watched), retained (finished, still readable).", ["state"], registry=r,
        )
        self.jobs_created = Counter("imagewire_jobs_created", "Video jobs started (generations).", ["model"],
                                    registry=r)
        self.job_bytes = Gauge(
            "imagewire_job_retained_bytes", "Memory the video jobs hold (videos, latest previews, bookkeeping), "
            "bounded by --retention-bytes.", registry=r,
        )
        self.job_resumes = Counter(
            "imagewire_job_resumes", "Calls that attached to an existing job: WatchAnimation, or Animate sent again "
            "with the id of a job that exists.", ["rpc"], registry=r,
        )
        self.job_evictions = Counter(
            "imagewire_job_evictions", "Finished video jobs dropped: expired (older than --retention) or budget "
            "(to stay within --retention-bytes).", ["reason"], registry=r,
        )
        self.model_load = Gauge(
            "imagewire_model_load_seconds", "How long loading and warming the model took.", ["model"], registry=r
        )
        self.recompiles = Gauge(
            "imagewire_recompiles", "Graphs torch.compile compiled after the warm-up (a shape it did not cover); "
            "0 while every batch runs code compiled before SERVING.", registry=r,
        )
        self._http: Any = None

    def serve_http(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP in a background thread; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        bound = int(server.server_port)
        _LOGGER.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
