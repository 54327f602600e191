"""`factory serve`: the online forecast endpoint (Ray Serve) in the foreground."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from factory.cli_common import console
from factory.cli_errors import friendly
from factory.settings import get_settings

HUNG = " (Ray Serve did not finish shutting down in 30 s; its processes end with this one)"


@friendly
def serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port.")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas of the deployment.")] = 1,
    max_models: Annotated[
        int, typer.Option(min=1, help="Products each replica keeps loaded (LRU).")
    ] = 256,
    ttl: Annotated[
        float,
        typer.Option(
            min=0,
            help="Longest a product's versions are trusted without re-reading the registry"
            " (promotions through the factory are seen within about a second regardless).",
        ),
    ] = 60.0,
    for_: Annotated[
        float | None, typer.Option("--for", min=0, help="Stop after this many seconds.")
    ] = None,
) -> None:
    """Serve forecasts over HTTP until interrupted: POST /forecast, GET /healthz, docs at /docs.

    Each product is answered by its production champion (a running canary takes its share of
    request keys), verified before use; a promotion is served within seconds."""
    from factory.local import free_port
    from factory.serving.app import start, stop

    settings = get_settings()
    with console.status("starting the forecast endpoint on Ray Serve"):
        url = start(
            settings,
            port=free_port(port) if port else 0,
            replicas=replicas,
            max_models=max_models,
            ttl_s=ttl,
        )
    console.print(f"serving  {url}/forecast  (docs: {url}/docs, health: {url}/healthz)")
    deadline = None if for_ is None else time.monotonic() + for_
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        clean = stop()
        console.print("stopped the forecast endpoint" + ("" if clean else HUNG))
        if not clean:  # Ray's own exit handler would wait on the same hang
            sys.stdout.flush()
            os._exit(0)
