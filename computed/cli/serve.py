"""``computed serve``: the REST API under waitress, a production WSGI server."""

from __future__ import annotations

import logging

import click

from computed.accounts.registry import ADMIN_CREDENTIALS_FILE
from computed.settings import Settings
from computed.store.engine import shown_url
from computed.virt import local_host


@click.command()
@click.option("--host", help="Address to listen on (setting api.host; default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (setting api.port; default 8080).")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the API (JSON REST under /v1, OpenAPI at /openapi.json, docs at /docs)."""
    import waitress

    from api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    found = local_host.problems(settings)
    if found:
        raise click.ClickException("the local libvirtd cannot run guests safely from these settings:\n- "
                                   + "\n- ".join(found))
    host = host or settings.api_host
    port = port or settings.api_port
    app = create_app(settings)
    path = settings.var_dir / ADMIN_CREDENTIALS_FILE
    if app.extensions["computed"].accounts.bootstrap(path):
        click.echo(f"created the admin account; its credentials are in {path} (readable by you only)", err=True)
    click.echo(f"computed API on http://{host}:{port}/ (docs: http://{host}:{port}/docs); "
               f"libvirt {settings.libvirt_uri}, store {shown_url(settings.database_url)}", err=True)
    try:
        waitress.serve(app, host=host, port=port, threads=settings.api_threads, ident="computed",
                       clear_untrusted_proxy_headers=True)
    finally:
        app.extensions["computed"].close()
