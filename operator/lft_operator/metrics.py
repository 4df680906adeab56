"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

RESOURCES = Gauge("lft_resources", "LoRAFineTune resources by phase (as last reconciled)", ["phase"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram(
    "lft_reconcile_duration_seconds",
    "Time of one reconcile of a LoRAFineTune",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter("lft_reconcile_errors_total", "Failed reconciles (retried)", registry=REGISTRY)
STATUS_PATCHES = Counter("lft_status_patches_total", "Status patches sent by the operator", registry=REGISTRY)
JOBS_CREATED = Counter("lft_jobs_created_total", "Training Jobs created", registry=REGISTRY)
API_SECONDS = Histogram(
    "lft_api_request_duration_seconds",
    "Kubernetes API requests of the reconciler",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
# The same requests by what they addressed (bench/operator_scale.py prints requests per resource from it).
API_REQUESTS = Counter(
    "lft_api_requests_total",
    "Kubernetes API requests by verb and resource (plural, /subresource)",
    ["verb", "resource"],
    registry=REGISTRY,
)
LEADER = Gauge("lft_leader", "1 while this replica holds the leader Lease and reconciles", registry=REGISTRY)
EVENTS_POSTED = Counter("lft_events_total", "Kubernetes Events posted", ["type", "reason"], registry=REGISTRY)

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


class PhaseTracker:
    """Phase of every resource, for the lft_resources gauge."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def set(self, key: tuple[str, str], phase: str | None) -> None:
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
        self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            RESOURCES.labels(phase=phase).set(count)


def serve(port: int) -> None:
    if port > 0:
        start_http_server(port, registry=REGISTRY)
