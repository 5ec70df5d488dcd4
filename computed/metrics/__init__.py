"""Metrics in Prometheus's terms: what this process counts as it happens (``counters``) and
what the store holds, read at each scrape (``store``)."""
