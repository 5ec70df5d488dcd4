"""``/docs``: the API's reference page, rendered on the server from the OpenAPI document,
so it needs no internet and no JavaScript."""

from __future__ import annotations

from html import escape

from flask import Blueprint, current_app

blp = Blueprint("docs", __name__)

STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:2rem}.op{margin:1rem 0;padding:.5rem 1rem;background:#f7f7f9;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}code{background:#eee;padding:0 .2rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}"""


def _schema_name(schema: dict) -> str:
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1]


def _properties(name: str, components: dict) -> str:
    schema = components.get(name, {})
    required = set(schema.get("required", []))
    rows = []
    for prop, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or _schema_name(spec) or "object"
        if kind == "array":
            kind = f"array of {spec.get('items', {}).get('type') or _schema_name(spec)}"
        note = spec.get("description", "")
        rows.append(f"<tr><td><code>{escape(prop)}</code>{' *' if prop in required else ''}</td>"
                    f"<td>{escape(str(kind))}</td><td>{escape(note)}</td></tr>")
    if not rows:
        return ""
    return f"<p><b>{escape(name)}</b></p><table><tr><th>field</th><th>type</th><th>notes</th></tr>{''.join(rows)}</table>"


@blp.route("/docs")
def docs():
    spec = current_app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    components = spec.get("components", {}).get("schemas", {})
    parts = [f"<!doctype html><meta charset=utf-8><title>{escape(spec['info']['title'])} API</title>",
             f"<style>{STYLE}</style><h1>{escape(spec['info']['title'])} API {escape(spec['info']['version'])}</h1>",
             "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>. Every error is "
             "<code>{\"error\": {\"code\": ..., \"message\": ...}}</code>.</p>"]
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            parts.append(f"<div class=op><span class=m>{escape(method.upper())}</span> <code>{escape(path)}</code>")
            parts.append(f"<p>{escape(op.get('summary', ''))} {escape(op.get('description', ''))}</p>")
            params = [p for p in op.get("parameters", []) if isinstance(p, dict) and "name" in p]
            if params:
                parts.append("<p>Parameters: " + ", ".join(
                    f"<code>{escape(p['name'])}</code> ({escape(p.get('in', ''))})" for p in params) + "</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(_properties(_schema_name(body), components))
            codes = ", ".join(escape(str(c)) for c in op.get("responses", {}))
            parts.append(f"<p>Responses: {codes}</p></div>")
    return "".join(parts), 200, {"Content-Type": "text/html; charset=utf-8"}
