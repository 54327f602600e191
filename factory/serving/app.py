"""The online endpoint: a Ray Serve application with a FastAPI ingress.

One multiplexed deployment (`serve.multiplexed`, model id = product id) keeps an LRU of
products per replica; each product's slot holds the verified models of the versions that
answer for it now (champion or staging candidate, canary, shadow challenger). Which versions
answer is read from the registry's aliases and kept until the audit log names the product
(polled every second: a promotion, rollback, canary or retirement is served within seconds)
or for `ttl_s` at most (changes made outside the factory's audited paths). Forecasts of the
serving and shadow versions are kept in the forecast history (one file per replica), where the
drift monitor compares their realized errors.
"""

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
import uuid
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, Header, HTTPException, Response
from ray import serve

from factory.adapters.audit_log import audit_log
from factory.adapters.fanout import ensure_ray
from factory.adapters.identity import ANALYST, settings_as
from factory.adapters.registry.names import NoModelError
from factory.adapters.registry.registry import Registry
from factory.adapters.signing import ModelIntegrityError
from factory.core.saved import ProductModel, preload
from factory.local import free_port
from factory.serving.history import HistoryRecorder
from factory.serving.resolver import RegistryUnavailable, Resolver, Served, VersionRef
from factory.serving.schema import ForecastRequest, ForecastResponse, Health
from factory.settings import Settings

log = logging.getLogger(__name__)

APP_NAME = "factory"
DEPLOYMENT = "forecaster"
POLL_S = 1.0  # how often a replica reads the audit log's change feed
FORECASTS_PER_SLOT = 8  # forecasts kept per loaded product (by version and horizon)
# Secrets the endpoint never needs: it reads as the analyst and only verifies signatures.
WITHHELD = (
    "FACTORY_MLFLOW_ADMIN_PASSWORD",
    "FACTORY_TRAINER_PASSWORD",
    "FACTORY_PROMOTER_PASSWORD",
)

api = FastAPI(
    title="Model factory forecasts",
    description="Forecasts from each product's production model (its canary for a sticky share"
    " of request keys), straight from the MLflow registry, verified before use.",
    version="1",
)


class ProductSlot:
    """One product's loaded versions (only those answering now) and their forecasts so far."""

    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        self.models: dict[str, ProductModel] = {}
        self.cache: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.lock = asyncio.Lock()

    def keep(self, served: Served) -> None:
        """Drop versions that no longer answer (after a promotion, rollback or canary end)."""
        live = {r.key for r in (served.serving, served.canary, served.shadow) if r is not None}
        for key in [k for k in self.models if k not in live]:
            del self.models[key]
        self.cache = {k: v for k, v in self.cache.items() if k[0] in live}


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class ForecastService:
    """The `/forecast` and `/healthz` routes of one replica."""

    def __init__(
        self, env: dict[str, str], max_models: int = 256, ttl_s: float = 60.0, flush_s: float = 30.0
    ) -> None:
        os.environ.update(env)
        preload()  # not on the first request's time
        settings = settings_as(ANALYST)
        self.registry = Registry(settings)
        self.resolver = Resolver(self.registry, ttl_s)
        try:
            log.info("serving %d products", self.resolver.load())
        except Exception as exc:  # each product is then read on its first request
            log.warning("cannot read the registry yet: %s", exc)
        self.max_models = max_models
        self.history = HistoryRecorder(
            settings.resolved_forecasts_url, f"online-{uuid.uuid4().hex[:8]}"
        )

        async def new_slot(product_id: str) -> ProductSlot:  # the LRU lives on this function
            return ProductSlot(product_id)

        self._lru_owner = new_slot
        self.slot = serve.multiplexed(max_num_models_per_replica=max_models)(new_slot)
        self.audit = audit_log(settings.resolved_audit_url)
        loop = asyncio.get_event_loop()
        self._tasks = [
            loop.create_task(self._flush_every(flush_s)),
            loop.create_task(self._follow_audit_log()),
        ]
        # What exists now (libraries, the registry's answers) lives long and holds no garbage
        # cycles: kept out of the collector's full passes, which walk every tracked object
        # while every request waits. Only now: later objects include short-lived cycles
        # (pandas frames) that only the collector frees.
        gc.collect()
        gc.freeze()

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self.history.flush)

    async def _follow_audit_log(self) -> None:
        """Read again what serves each product a new audit record names (within POLL_S of a
        promotion, rollback, canary or retirement), and every product each half TTL (changes
        made by hand outside the factory)."""
        seq = None
        everything_at = time.monotonic() + self.resolver.ttl_s / 2
        while True:
            try:
                seq, changed = await asyncio.to_thread(self.audit.changed_since, seq)
                if time.monotonic() >= everything_at:
                    everything_at = time.monotonic() + self.resolver.ttl_s / 2
                    await asyncio.to_thread(self.resolver.load)
                elif changed:
                    await self._reload(changed)
            except Exception as exc:  # the TTL still bounds staleness
                log.warning("cannot read the audit log: %s", exc)
            await asyncio.sleep(POLL_S)

    async def _reload(self, products: set[str]) -> None:
        try:
            await asyncio.to_thread(self.resolver.load, products)
        except Exception as exc:  # read on their next request, or kept while the registry fails
            log.warning("cannot read the registry: %s", exc)
            self.resolver.invalidate(products)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.history.flush()

    @api.get("/healthz")
    async def healthz(self) -> Health:
        """The replica is up; how many products it holds of its LRU's size."""
        wrapper = getattr(self._lru_owner, "__serve_multiplex_wrapper", None)
        loaded = len(wrapper.models) if wrapper is not None else 0
        return Health(
            status="ok", models_loaded=loaded, max_models=self.max_models, pid=os.getpid()
        )

    @api.post("/forecast", response_model=ForecastResponse)
    async def forecast(
        self,
        request: ForecastRequest,
        x_request_key: str | None = Header(None),
        serve_multiplexed_model_id: str | None = Header(
            None,
            convert_underscores=False,
            description="The product id again (one product per request): the request then goes"
            " to the replica that holds the product; without it, replicas take turns.",
        ),
    ) -> Response:
        """Forecast each asked-for product with the version serving it now.

        404 when a product is unknown or retired; 503 when its model fails verification or
        the registry cannot be read; 422 for a malformed request."""
        key = request.request_key or x_request_key
        out = []
        for pid in request.products:
            out.append(await self._one(pid, request.horizon or 0, request.exogenous, key))
        return Response(orjson.dumps({"forecasts": out}), media_type="application/json")

    async def _one(
        self, pid: str, horizon: int, exog: list[dict[str, Any]] | None, key: str | None
    ) -> dict[str, Any]:
        """One product's answer (a ProductForecast as JSON-ready data)."""
        try:
            served = self.resolver.fresh(pid)
            if served is None:  # not read yet, or longer ago than the TTL
                served = await asyncio.to_thread(self.resolver.resolve, pid)
        except NoModelError as exc:
            raise HTTPException(404, str(exc)) from None
        except RegistryUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        slot: ProductSlot = await self.slot(pid)
        ref, served_as = served.pick(key)
        role = "canary" if served_as == "canary" else "serving"
        try:
            async with slot.lock:
                slot.keep(served)
                rows = await self._rows(slot, ref, role, horizon, exog)
                if served.shadow is not None:
                    await self._rows(slot, served.shadow, "shadow", horizon, exog)
        except ModelIntegrityError as exc:
            raise HTTPException(503, f"model refused: {exc}") from None
        except (ValueError, KeyError) as exc:
            raise HTTPException(422, f"product {pid!r}: {exc}") from None
        return {
            "product_id": pid,
            "model_name": ref.name,
            "model_version": ref.version,
            "served_as": served_as,
            "rows": rows,
        }

    async def _rows(
        self,
        slot: ProductSlot,
        ref: VersionRef,
        role: str,
        horizon: int,
        exog: list[dict[str, Any]] | None,
    ) -> list[dict[str, Any]]:
        """A version's forecast rows: loaded and verified on first use, computed once per
        horizon when no future inputs are given (a model always forecasts from its own
        training cutoff) and then answered from memory; each computed forecast is kept in the
        forecast history."""
        if exog is None and (ref.key, horizon) in slot.cache:
            return slot.cache[(ref.key, horizon)]
        loaded = slot.models.get(ref.key)
        ds, yhat, bounds, slot.models[ref.key] = await asyncio.to_thread(
            self._compute, loaded, ref, horizon, exog
        )
        self.history.record(slot.product_id, ds, yhat, ref, role)
        text = np.datetime_as_string(ds.astype("datetime64[s]"), unit="s")
        rows = [{"ds": d, "yhat": y} for d, y in zip(text, yhat.tolist(), strict=True)]
        for column, values in bounds.items():  # the prediction intervals, where the model has them
            for row, value in zip(rows, values.tolist(), strict=True):
                row[column] = value
        if exog is None:
            if len(slot.cache) >= FORECASTS_PER_SLOT:  # a few horizons per product, not any
                slot.cache.pop(next(iter(slot.cache)))
            slot.cache[(ref.key, horizon)] = rows
        return rows

    def _compute(
        self,
        model: ProductModel | None,
        ref: VersionRef,
        horizon: int,
        exog: list[dict[str, Any]] | None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], ProductModel]:
        """Load (verified) when not loaded yet, then forecast (`ds`, `yhat`, interval bounds):
        off the event loop."""
        model = model or self._load(ref)
        if exog is None:
            ds, yhat = model.forecast_values(horizon)
            return ds, yhat, model.bounds(yhat), model
        frame = model.predict(pd.DataFrame(exog))
        bounds = {c: frame[c].to_numpy(float) for c in frame.columns if c.startswith("yhat_")}
        return frame["ds"].to_numpy("datetime64[ns]"), frame["yhat"].to_numpy(float), bounds, model

    def _load(self, ref: VersionRef) -> ProductModel:
        return self.registry.model_from(self.resolver.files(ref))


def replica_env(settings: Settings) -> dict[str, str]:
    """What a replica needs to read the same registry as this process: the FACTORY_ and
    MLFLOW_ settings (paths made absolute), without the other roles' secrets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("FACTORY_", "MLFLOW_")) and k not in WITHHELD
    }
    env["FACTORY_HOME"] = str(settings.resolved_home)
    env["FACTORY_FORECASTS_URL"] = settings.resolved_forecasts_url
    env["MLFLOW_TRACKING_URI"] = env["MLFLOW_REGISTRY_URI"] = settings.tracking_uri
    return env


def build(
    settings: Settings,
    replicas: int = 1,
    max_models: int = 256,
    ttl_s: float = 60.0,
    flush_s: float = 30.0,
) -> serve.Application:
    """The Serve application for these settings."""
    return ForecastService.options(num_replicas=replicas).bind(  # type: ignore[attr-defined]
        replica_env(settings), max_models, ttl_s, flush_s
    )


def app_builder(args: dict[str, Any]) -> serve.Application:
    """`serve deploy`'s entry point (deployments/serve.yaml): settings from the environment of
    the cluster's nodes (FACTORY_*), sizes from the config's args."""
    from factory.settings import get_settings

    return build(
        get_settings(),
        int(args.get("replicas", 1)),
        int(args.get("max_models", 256)),
        float(args.get("ttl_s", 60.0)),
    )


def start(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 0,
    replicas: int = 1,
    max_models: int = 256,
    ttl_s: float = 60.0,
    flush_s: float = 30.0,
    wait_s: float = 120.0,
) -> str:
    """Run the endpoint on the factory's Ray (local or RAY_ADDRESS) and return its URL once
    `/healthz` answers."""
    ensure_ray(settings)
    port = port or free_port()
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # no log line per request
    serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
    serve.run(
        build(settings, replicas, max_models, ttl_s, flush_s),
        name=APP_NAME,
        route_prefix="/",
        logging_config=quiet,
    )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the endpoint did not answer at {url}/healthz in {wait_s:.0f} s")
        time.sleep(0.5)


def stop(wait_s: float = 30.0) -> bool:
    """Shut the endpoint (and Serve) down on this Ray; False when Serve's shutdown did not
    finish within `wait_s` (it can hang: ray-project/ray#16589, #29431), left to run on in a
    daemon thread."""
    worker = threading.Thread(target=serve.shutdown, name="serve-shutdown", daemon=True)
    worker.start()
    worker.join(wait_s)
    return not worker.is_alive()
