"""``speclake serve``: the HTTP API under uvicorn (loopback by default)."""
from __future__ import annotations

import logging

import click

from speclake.cli import DEFAULT_LAKE

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --api-key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", envvar="SPECLAKE_API_KEY", default=None,
              help="Require this key in the X-API-Key header on every route but /health (or $SPECLAKE_API_KEY).")
@click.option("--max-upload-mb", default=5.0, show_default=True, help="Largest request body / uploaded file.")
@click.option("--sql-timeout", default=10.0, show_default=True, help="Seconds a /sql query may run.")
@click.option("--sql-max-rows", default=10_000, show_default=True, help="Rows a /sql answer holds at most.")
def serve_cmd(lake_dir: str, host: str, port: int, api_key: str | None, max_upload_mb: float, sql_timeout: float,
              sql_max_rows: int) -> None:
    """Serve the lake over HTTP: POST /annotate, GET /spectra/{id}, /compounds/{inchikey}, /studies,
    /studies/{name}/annotations, /studies/{name}/report, POST /sql (read-only); OpenAPI docs at /docs.

    \b
    Example:
      speclake serve --lake mylake --port 8000
      curl -s localhost:8000/health
    """
    import uvicorn

    from speclake.lake.catalog import Lake
    from speclake.lake.sql_guard import SqlGuardSettings
    from speclake.serving.api.app import create_app, is_loopback
    from speclake.serving.api.service import ApiSettings

    if not is_loopback(host) and not api_key:
        raise click.ClickException(f"refusing to listen on {host} without --api-key (anyone on the network could "
                                   "query the lake); give a key or keep the default 127.0.0.1")
    Lake(lake_dir)  # a clear error now when the folder is not a lake
    settings = ApiSettings(api_key=api_key, max_upload_bytes=int(max_upload_mb * 2**20),
                           sql=SqlGuardSettings(timeout_s=sql_timeout, max_rows=sql_max_rows))
    logging.getLogger("speclake.api").setLevel(logging.INFO)
    click.echo(f"speclake API on http://{host}:{port} (docs at /docs), lake {lake_dir}", err=True)
    # one log line per request comes from the app (with its request id): uvicorn's access log would repeat it
    uvicorn.run(create_app(lake_dir, settings), host=host, port=port, log_level="info", access_log=False)
