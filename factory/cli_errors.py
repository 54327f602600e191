"""How the `factory` command shows mistakes and outages: one red line per problem plus a hint,
exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from factory.core.errors import UserError

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn user mistakes (UserError) and known outages into one red line plus a hint (one
    line per problem when there are several), exit code 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _fail(exc, exc.hint)
        except Exception as exc:
            hint = _outage_hint(exc)
            if hint is None:
                raise
            _fail(exc, hint)

    return wrapper  # type: ignore[return-value]


def _fail(exc: BaseException, hint: str) -> None:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    err.print(f"[dim]hint: {escape(hint)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


def _outage_hint(exc: Exception) -> str | None:
    """A hint for the infrastructure errors shown as one line (None: show the traceback)."""
    from factory.adapters.events import EventsNotEmitted
    from factory.local import ServiceError

    if isinstance(exc, ServiceError):
        return "see the log named above; `factory down` stops leftovers"
    if isinstance(exc, EventsNotEmitted):
        return "set PREFECT_API_URL to the server that runs the deployments"
    mlflow_errors = sys.modules.get("mlflow.exceptions")  # not imported: cannot be one of its
    if mlflow_errors and isinstance(exc, mlflow_errors.MlflowException):
        return "check FACTORY_MLFLOW_TRACKING_URI and that the server is up (`factory validate`)"
    return None


def warn(line: str) -> None:
    """One yellow warning line on stderr."""
    err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
