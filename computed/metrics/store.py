"""The metrics read from the store at each scrape (a prometheus_client custom collector):
instances by state, each host's capacity, room and allocation, whether it is enabled and
reachable, and the cost accrued. Read when asked, not counted as things happen, so that they
are right whichever process changed the store, and every process sharing a store reports
the same values (take one process's, or ``max``, not their ``sum``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from computed.billing.accrued import AccruedCost
from computed.store.engine import Database
from computed.hosts.capacity import total_room
from computed.hosts.registry import Hosts
from computed.compute.state import State
from computed.store.models import Instance
from computed.settings import Settings

MIB = 1024 * 1024


class StoreCollector(Collector):
    def __init__(self, settings: Settings, db: Database, hosts: Hosts, accrued: AccruedCost,
                 currencies: Iterable[str] = ()):
        self.settings = settings
        self.db = db
        self.hosts = hosts
        self.accrued = accrued
        #: the size catalog's: each has its series from the start, at 0 until something costs
        self.currencies = frozenset(currencies)

    def collect(self) -> Iterator:
        started = time.perf_counter()
        yield self._instances()
        yield from self._hosts()
        yield self._cost()
        took = GaugeMetricFamily("computed_store_scrape_seconds",
                                 "How long reading the store's metrics took at this scrape.")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _instances(self) -> GaugeMetricFamily:
        with self.db.reading() as s:
            counts = dict(s.execute(select(Instance.state, func.count()).group_by(Instance.state)).all())
        family = GaugeMetricFamily("computed_instances", "Instances by state (terminated ones until they are "
                                   "purged, after the terminated retention).", labels=["state"])
        for state in State:
            family.add_metric([state.value], counts.get(state, 0))
        return family

    def _hosts(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "vcpus": GaugeMetricFamily("computed_host_vcpus", "The host's CPUs, as libvirt said at its last "
                                       "check.", labels=["host"]),
            "vcpus_room": GaugeMetricFamily("computed_host_vcpus_room", "The vCPUs the host's instances may have "
                                            "in all: its CPUs times the CPU overcommit ratio.", labels=["host"]),
            "vcpus_allocated": GaugeMetricFamily("computed_host_vcpus_allocated", "The vCPUs of the host's "
                                                 "instances that are not terminated.", labels=["host"]),
            "memory": GaugeMetricFamily("computed_host_memory_bytes", "The host's memory, as libvirt said at its "
                                        "last check.", labels=["host"]),
            "memory_room": GaugeMetricFamily("computed_host_memory_room_bytes", "The memory the host's instances "
                                             "may have in all: its memory times the memory overcommit ratio.",
                                             labels=["host"]),
            "memory_allocated": GaugeMetricFamily("computed_host_memory_allocated_bytes", "The memory of the "
                                                  "host's instances that are not terminated.", labels=["host"]),
            "instances": GaugeMetricFamily("computed_host_instances", "The host's instances that are not "
                                           "terminated (stopped ones keep their place).", labels=["host"]),
            "enabled": GaugeMetricFamily("computed_host_enabled", "1 if the host takes new instances.",
                                         labels=["host"]),
            "reachable": GaugeMetricFamily("computed_host_reachable", "1 if the host answered its last check.",
                                           labels=["host"]),
        }
        for state in self.hosts.list():
            h, used = state.host, state.allocated
            vcpus_room, memory_room = total_room(h, self.settings)
            for key, value in (("vcpus", h.vcpus or 0), ("vcpus_room", vcpus_room), ("vcpus_allocated", used.vcpus),
                               ("memory", (h.memory_mib or 0) * MIB), ("memory_room", memory_room * MIB),
                               ("memory_allocated", used.memory_mib * MIB), ("instances", used.instances),
                               ("enabled", int(h.enabled)), ("reachable", int(h.reachable))):
                families[key].add_metric([h.name], value)
        yield from families.values()

    def _cost(self) -> CounterMetricFamily:
        family = CounterMetricFamily("computed_cost_accrued", "What every account's usage has cost so far, by "
                                     "currency, as billing counts it (the billing policy's).", labels=["currency"])
        totals = {currency: Decimal(0) for currency in self.currencies} | self.accrued.totals()
        for currency, total in sorted(totals.items()):
            family.add_metric([currency], float(total))
        return family
