"""EC2's XML: ``<{Action}Response xmlns=...><requestId/>...`` for answers and
``<Response><Errors><Error>...`` for errors, built with ElementTree from plain values:
a dict is an element with children, a list is a ``...Set`` of ``<item>``, None is left out."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

from flask import Response

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
CONTENT_TYPE = "text/xml;charset=UTF-8"
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
#: characters XML 1.0 cannot carry, even escaped
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def timestamp(value: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as EC2 writes times: 2024-05-01T12:00:00.000Z."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return timestamp(value)
    return _NOT_XML.sub("\ufffd", str(value))


def add(parent: ET.Element, tag: str, value) -> None:
    """VALUE under PARENT as <TAG>: dicts nest, lists become <item>s, None is skipped."""
    if value is None:
        return
    element = ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for key, child in value.items():
            add(element, key, child)
    elif isinstance(value, (list, tuple)):
        for item in value:
            add(element, "item", item)
    else:
        element.text = text(value)


def _serialize(root: ET.Element) -> bytes:
    return DECLARATION + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def response(action: str, request_id: str, body: dict, status: int = 200) -> Response:
    root = ET.Element(f"{action}Response", {"xmlns": NAMESPACE})
    add(root, "requestId", request_id)
    for key, value in body.items():
        add(root, key, value)
    return Response(_serialize(root), status=status, content_type=CONTENT_TYPE,
                    headers={"x-amzn-RequestId": request_id})


def error(code: str, message: str, request_id: str, status: int) -> Response:
    root = ET.Element("Response")
    error_element = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
    add(error_element, "Code", code)
    add(error_element, "Message", message)
    add(root, "RequestID", request_id)
    return Response(_serialize(root), status=status, content_type=CONTENT_TYPE,
                    headers={"x-amzn-RequestId": request_id})
