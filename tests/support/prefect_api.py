"""The Prefect API calls tests and benchmarks make against a server they started."""

from __future__ import annotations

import time
from typing import Any

import httpx


class PrefectApi:
    """The few Prefect REST calls the tests and benchmarks make against a server they started."""

    def __init__(self, url: str) -> None:
        self.url = url  # .../api

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call; a busy SQLite server answers 503 now and then: retry those a few times."""
        for attempt in range(5):
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
            if response.status_code != 503 or attempt == 4:
                break
            time.sleep(1 + attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    def post(self, path: str, body: Any = None) -> Any:
        """POST a JSON body (an empty object by default)."""
        return self.call("POST", path, {} if body is None else body)

    def get(self, path: str) -> Any:
        """GET a JSON document."""
        return self.call("GET", path)

    def deployment_id(self, name: str) -> str:
        """The id of a deployment named `flow-name/deployment-name`."""
        return str(self.get(f"/deployments/name/{name}")["id"])

    def run(self, name: str, **parameters: Any) -> str:
        """Create a flow run of a deployment (what `prefect deployment run` does)."""
        body = {"parameters": parameters} if parameters else {}
        return str(
            self.post(f"/deployments/{self.deployment_id(name)}/create_flow_run", body)["id"]
        )

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        """Every flow run of a deployment."""
        flt = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}}
        return list(self.post("/flow_runs/filter", flt))

    def events(self, name: str) -> list[dict[str, Any]]:
        """The events of one name the server has recorded (first page)."""
        return list(self.post("/events/filter", {"filter": {"event": {"name": [name]}}})["events"])
