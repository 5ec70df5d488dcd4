"""libvirt storage pool and volume XML, built with ElementTree (copy-mode hosts' storage)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def pool_xml(name: str, path: Path, mode: str = "0755") -> str:
    pool = ET.Element("pool", {"type": "dir"})
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = str(path)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = mode
    return ET.tostring(pool, encoding="unicode")


def volume_xml(name: str, capacity: int, fmt: str, mode: str, backing: str | None = None) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", {"unit": "bytes"}).text = str(capacity)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", {"type": fmt})
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = mode
    if fmt == "qcow2":
        ET.SubElement(target, "compat").text = "1.1"  # as qemu-img makes them (shared mode's overlays)
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", {"type": "qcow2"})  # never probed: a guest's disk could claim any format
    return ET.tostring(vol, encoding="unicode")
