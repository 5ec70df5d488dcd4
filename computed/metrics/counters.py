"""Metrics in Prometheus's terms: what happens in this process, counted as it happens
(launches and their failures, how long launches take, libvirt's errors, the API's requests).
What the store holds (instances by state, hosts, cost) is read at each scrape instead
(``store_metrics``), so every process sharing a store reports it the same.

Each Service has a registry of its own (never prometheus_client's global one: a process may
hold several services, as the tests do); ``api/metrics.py`` serves it at ``/metrics``."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from computed import __version__

#: launches take milliseconds on libvirt's test driver, seconds under KVM, and up to
#: minutes for a first boot under TCG (to SSH: the boot timeout's 10 minutes at most)
LAUNCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240,
                  300, 450, 600, 900)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("computed_build", "The service's version.", registry=self.registry).info({"version": __version__})
        self.launches = Counter(
            "computed_launches", "Launches this process carried out (one per instance; a launch a crash cut "
            "short and reconciliation made again counts again).", ["size", "image"], registry=self.registry)
        self.launch_failures = Counter(
            "computed_launch_failures", "Launches that ended the instance terminated, by its state reason code.",
            ["code"], registry=self.registry)
        self.launch_to_running = Histogram(
            "computed_launch_to_running_seconds", "From a launch's request to its instance's running state.",
            buckets=LAUNCH_BUCKETS, registry=self.registry)
        self.launch_to_ssh = Histogram(
            "computed_launch_to_ssh_ready_seconds", "From a launch's request to the service's first SSH login "
            "to the instance.", buckets=LAUNCH_BUCKETS, registry=self.registry)
        self.libvirt_errors = Counter(
            "computed_libvirt_errors", "libvirt calls that failed, by host and operation (open: the host could "
            "not be connected to).", ["host", "operation"], registry=self.registry)
        self.requests = Histogram(
            "computed_api_request_duration_seconds", "API requests (REST and EC2) by endpoint (the route's "
            "name, not its path), method and status.", ["endpoint", "method", "status"],
            buckets=REQUEST_BUCKETS, registry=self.registry)

    def launch_started(self, size: str, image: str) -> None:
        self.launches.labels(size, image).inc()

    def launch_failed(self, code: str) -> None:
        self.launch_failures.labels(code).inc()

    def launch_running(self, seconds: float) -> None:
        self.launch_to_running.observe(max(seconds, 0.0))

    def launch_ssh_ready(self, seconds: float) -> None:
        self.launch_to_ssh.observe(max(seconds, 0.0))

    def libvirt_error(self, host: str, operation: str) -> None:
        self.libvirt_errors.labels(host, operation).inc()

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).observe(seconds)
