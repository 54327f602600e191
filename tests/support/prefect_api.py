"""Prefect's own sync client on a server that tests and benchmarks started, plus the shortcuts
they share. The client retries 429/502/503 itself (a busy SQLite server answers 503 now and then).
"""

from __future__ import annotations

from typing import Any, Self
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.schemas.events import ReceivedEvent


class PrefectApi:
    """`client` is a `SyncPrefectClient` on `url` (`.../api`); use this as a context manager."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = SyncPrefectClient(url)
        self._deployment_ids: dict[str, UUID] = {}

    def __enter__(self) -> Self:
        self.client.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.__exit__(*exc_info)

    def deployment_id(self, name: str) -> UUID:
        """The id of a deployment named `flow-name/deployment-name` (looked up once)."""
        if name not in self._deployment_ids:
            self._deployment_ids[name] = self.client.read_deployment_by_name(name).id
        return self._deployment_ids[name]

    def run(self, name: str, **parameters: Any) -> UUID:
        """Create a flow run of a deployment (what `prefect deployment run` does); its id."""
        deployment = self.deployment_id(name)
        return self.client.create_flow_run_from_deployment(deployment, parameters=parameters).id

    def runs(self, deployment: str) -> list[FlowRun]:
        """Every flow run of a deployment (the server's default page, 200)."""
        ids = DeploymentFilterId(any_=[self.deployment_id(deployment)])
        return self.client.read_flow_runs(deployment_filter=DeploymentFilter(id=ids))

    def events(self, name: str) -> list[ReceivedEvent]:
        """The events of one name the server has recorded (first page)."""
        only = EventFilter(event=EventNameFilter(name=[name]))
        # The client's default limit (100) is above what the server accepts (at most 50).
        return self.client.read_events(filter=only, limit=50).events

    def post_event(self, body: list[dict[str, Any]]) -> None:
        """POST raw event JSON to `<api>/events`, as a system outside Prefect does."""
        self.client.request("POST", "/events", json=body)
