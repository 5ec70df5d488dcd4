"""The libvirt domains one store made (by the store id in their metadata), as tests that
run real service processes see and clean them up."""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import libvirt

from computed.virt.domain_xml import METADATA_NS, read_instance_element


class StoreDomain(NamedTuple):
    name: str
    active: bool
    #: the host its metadata names
    host: str


def store_domains(uri: str, store: str) -> dict[str, list[StoreDomain]]:
    """Instance id -> the domains on URI whose metadata names STORE (one each, unless
    something went wrong)."""
    conn = libvirt.open(uri)
    try:
        found = defaultdict(list)
        for dom in conn.listAllDomains():
            try:
                meta = read_instance_element(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))
            except libvirt.libvirtError:
                continue  # not ours, or gone meanwhile
            if meta.get("store") == store:
                found[meta.get("id", "")].append(StoreDomain(dom.name(), bool(dom.isActive()), meta.get("host", "")))
        return dict(found)
    finally:
        conn.close()


def remove_store_domains(uri: str, store: str) -> None:
    """Destroy and undefine every domain on URI that STORE made."""
    conn = libvirt.open(uri)
    try:
        for domains in store_domains(uri, store).values():
            for domain in domains:
                try:
                    dom = conn.lookupByName(domain.name)
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError:
                    pass  # gone meanwhile
    finally:
        conn.close()
