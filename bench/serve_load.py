"""Online serving under load: Zipf-popular products, N concurrent clients, one Ray Serve app.

    .venv/bin/python bench/serve_load.py [--products 10000] [--clients 8] [--seconds 60]
        [--replicas 2] [--max-models 1000] [--home DIR [--reuse]] [--out bench/results]

Registers the fleet honestly in a FACTORY_HOME (a temporary one unless --home): a seeded
synthetic panel (daily, 3 years, none discontinued), `factory train` on a light fleet (the
repo's two families, cheaper candidates) and `factory promote`, so every gate winner has a
production @champion (10,000 products: ~15 minutes). With --home DIR --reuse an earlier
registration there is used as it is; --register-only stops after registering.

Then starts the endpoint (`factory.serving.app.start`: Ray Serve on a local Ray, a free
loopback port) and measures, from this process over HTTP keep-alive (aiohttp by default, the
lighter client on a machine the server shares; --client httpx):

- cold load: single requests, one at a time, for products no replica has loaded yet (and each
  one again at once: the same request warm, with nothing else running);
- load: `--clients` concurrent clients for `--seconds` (or `--max-requests`), products drawn
  from a Zipf law over popularity ranks (s = `--zipf`); a request is warm when an earlier
  request for its product had completed before it was sent;
- LRU bound: more distinct products than `--max-models`, never requested before, while the
  replicas' RSS and `models_loaded` are sampled: memory should level off once the LRU is full;
- where the time went in the load phase: CPU of the replica(s), the HTTP ingress (HAProxy) and
  controller and this client process (from /proc), and the latency inside the replica (Serve's
  access log, kept in <home>/bench-logs/serve-<time>/); --py-spy also samples the replica and
  proxy stacks into <home>/bench-logs/py-spy-*.txt.

Prints the tables and writes bench/results/serve-<YYYYMMDD>.json (at the default 10,000
products; serve-<YYYYMMDD>-<n>.json otherwise). Targets (reported, not asserted): 0 errors,
warm p99 <= 50 ms, >= 300 requests/s, replica memory bounded by the LRU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.procmem: memory and CPU from /proc

from bench.procmem import memory_bytes, scan_processes
from factory.core.synthetic import PanelSpec
from factory.settings import Settings

DEFAULT_PRODUCTS = 10_000
PANEL = PanelSpec(periods=3 * 365, seed=7, discontinued_fraction=0.0)
AS_OF = PANEL.end
# This run's own home, store, Prefect and local Ray: nothing inherited from the shell (Ray's
# tuning variables, RAY_SERVE_* and the like, are kept).
STRIPPED_ENV = ("FACTORY_", "MLFLOW_", "PREFECT_", "RAY_ADDRESS")
MIB = 1024**2
TIMEOUT_S = 30.0
TARGETS = {"errors": 0, "warm_p99_ms": 50.0, "requests_per_s": 300.0}
# The repo's families and gate, with cheaper candidates: 10,000 products train in minutes.
LIGHT_FLEET = """\
version: 1
promotion: {mode: approve, auto_max_share: 0.05, max_regression: 0.0, approve_new: false}
failure_budget: 0.2
shard_size: 200
gate: {metric: mase, baseline_margin: 0.0, champion_margin: 0.0}
families:
  - name: fast-movers
    horizon: 28
    season_length: 7
    features:
      lags: [1, 7, 14, 28]
      rolling_means: [7, 28]
      calendar: [dayofweek, month]
      exogenous: [price, promo]
    models:
      - {kind: ridge, alpha: 1.0}
      - {kind: lightgbm, n_estimators: 20, learning_rate: 0.2, num_leaves: 7}
    backtest: {windows: 2}
    products: {match: ["grocery-*", "household-*"]}
  - name: long-tail
    horizon: 28
    season_length: 7
    features:
      lags: [7, 14, 28]
      rolling_means: [28]
      calendar: [dayofweek]
      exogenous: [promo]
    models:
      - {kind: ridge, alpha: 10.0}
      - {kind: lightgbm, n_estimators: 20, learning_rate: 0.2, num_leaves: 7, objective: poisson}
    backtest: {windows: 2}
    products: {all: true}
"""
console = Console(width=None if sys.stdout.isatty() else 150)


class BenchError(RuntimeError):
    """The registration or the endpoint failed; the message says where to look."""


# --- registration: panel, train-fleet, promote-fleet through the factory's own CLI ----------


@dataclass(frozen=True)
class Registration:
    """How the products reached production in this home (zeros when reused)."""

    products: int  # in the panel
    production: int  # with a production @champion
    panel_s: float = 0.0
    train_s: float = 0.0
    promote_s: float = 0.0
    reused: bool = False


def use_home(home: Path) -> Settings:
    """This process's settings: FACTORY_HOME = home, today = the panel's last day, every other
    FACTORY_/MLFLOW_/PREFECT_ variable and RAY_ADDRESS dropped (the CLI and Ray's workers
    inherit this environment)."""
    for name in [n for n in os.environ if n.startswith(STRIPPED_ENV)]:
        del os.environ[name]
    os.environ.update(FACTORY_HOME=str(home), FACTORY_AS_OF=AS_OF)
    from factory.settings import get_settings

    get_settings.cache_clear()
    return get_settings()


def run_cli(home: Path, log_name: str, *args: str) -> float:
    """`factory <args>` in its own process on this home; seconds it took."""
    logs = home / "bench-logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{log_name}.log"
    cmd = [sys.executable, "-m", "factory.cli", *args]
    console.print(f"  factory {' '.join(args)} (log: {log})")
    t0 = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.call(cmd, cwd=home, env=os.environ, stdout=out, stderr=subprocess.STDOUT)
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BenchError(f"factory {args[0]} exited with {code}; {log}:\n{tail}")
    return time.perf_counter() - t0


def register_fleet(settings: Settings, products: int) -> Registration:
    """Write the panel, then train and promote it with the factory's own commands."""
    from factory.adapters.data import write_panel
    from factory.core.synthetic import generate_panel

    home = settings.resolved_home
    fleet = home / "fleet.yaml"
    fleet.write_text(LIGHT_FLEET)
    console.print(f"registering {products:,} products in {home}")
    t0 = time.perf_counter()
    write_panel(
        generate_panel(replace(PANEL, n_products=products)).frame, settings.resolved_data_url
    )
    panel_s = time.perf_counter() - t0
    train_s = run_cli(home, "train", "train", "--fleet", str(fleet))
    promote_s = run_cli(home, "promote", "promote", "--fleet", str(fleet), "-r", "serve bench")
    served = production_products(settings)
    console.print(
        f"  {len(served):,} of {products:,} in production (panel {panel_s:.0f} s,"
        f" train {train_s:.0f} s, promote {promote_s:.0f} s)"
    )
    return Registration(products, len(served), panel_s, train_s, promote_s)


def production_products(settings: Settings) -> list[str]:
    """Products with a production @champion that are not retired, sorted."""
    from factory.adapters.registry.doctor import snapshot
    from factory.adapters.registry.names import CHAMPION_ALIAS, PRODUCTION
    from factory.adapters.registry.registry import Registry

    return sorted(
        m.product_id
        for m in snapshot(Registry(settings))
        if m.environment == PRODUCTION and not m.retired and CHAMPION_ALIAS in m.aliases
    )


def registered(settings: Settings, products: int, reuse: bool) -> tuple[Registration, list[str]]:
    """The registration of this home (made now unless reused) and its production products."""
    if reuse and (settings.resolved_home / "mlflow.db").exists():
        served = production_products(settings)
        if served:
            console.print(f"reusing {len(served):,} production products in {settings.home}")
            return Registration(products, len(served), reused=True), served
        console.print("nothing in production there: registering")
    registration = register_fleet(settings, products)
    return registration, production_products(settings)


# --- the endpoint and its processes ---------------------------------------------------------


@dataclass
class Serving:
    """The running endpoint's URL; once it stopped, where its Serve logs were kept."""

    url: str
    logs: Path | None = None


@contextmanager
def endpoint(settings: Settings, replicas: int, max_models: int) -> Iterator[Serving]:
    """The serving app on a free loopback port (Serve on the local Ray), stopped after."""
    from factory.serving.app import start, stop

    console.print(f"starting the endpoint: {replicas} replica(s), max_models {max_models}")
    t0 = time.perf_counter()
    url = start(settings, host="127.0.0.1", port=0, replicas=replicas, max_models=max_models)
    console.print(f"  {url} up in {time.perf_counter() - t0:.1f} s")
    serving = Serving(url)
    try:
        yield serving
    finally:
        logs = settings.resolved_home / "bench-logs" / f"serve-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        try:
            serving.logs = keep_serve_logs(url, logs)
        finally:
            stop()


def keep_serve_logs(url: str, dest: Path) -> Path | None:
    """Copy Serve's logs (replicas, proxy, controller) out of the Ray session, which the
    factory's local Ray removes at exit; the session is found by a replica's worker log."""
    from factory.adapters.fanout import ray_temp_dir

    try:
        pid = httpx.get(f"{url}/healthz", timeout=10).json()["pid"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    for log in Path(ray_temp_dir()).glob(f"session_*/logs/worker-*-{pid}.*"):
        serve_logs = log.parent / "serve"
        if serve_logs.is_dir():
            shutil.copytree(serve_logs, dest, dirs_exist_ok=True)
            console.print(f"  Serve logs kept in {dest}")
            return dest
    return None


ACCESS_LINE = re.compile(
    r"^INFO (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* -- POST /forecast 200 ([\d.]+)ms$"
)


def replica_side_ms(logs: Path | None, since: float, until: float) -> list[float]:
    """Latencies the replicas logged for successful POST /forecast between two wall-clock
    times (Serve's access log, local time): the time spent inside a replica."""
    if logs is None:
        return []
    out = []
    for log in logs.glob("replica_*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = ACCESS_LINE.match(line)
            if match:
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if since <= at <= until:
                    out.append(float(match[2]))
    return out


@dataclass(frozen=True)
class Health:
    """One replica's /healthz answer."""

    pid: int
    models_loaded: int
    max_models: int


def cmdline(pid: int) -> str:
    """A process's command line (Ray actors show `ray::<ActorClass>...` there)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        )
    except OSError:
        return ""


# Serve's processes by role: the HTTP ingress is HAProxy (a child of its manager actor), with
# Serve's own Python proxy behind it as a fallback.
SERVE_ROLES = {
    "replica": ("ServeReplica",),
    "proxy": ("ProxyActor", "HAProxyManager"),
    "controller": ("ServeController",),
}


def serve_processes(replica_pids: set[int]) -> dict[str, list[int]]:
    """Serve's processes on the replicas' Ray node (their raylet's children, and HAProxy), by
    role; other Ray sessions on the machine are left out."""
    procs = scan_processes()
    raylets = {procs[p].ppid for p in replica_pids if p in procs}
    roles: dict[str, list[int]] = {role: [] for role in SERVE_ROLES}
    for pid, stat in procs.items():
        if stat.ppid in raylets:
            line = cmdline(pid)
            for role, markers in SERVE_ROLES.items():
                if any(marker in line for marker in markers):
                    roles[role].append(pid)
    managers = set(roles["proxy"])
    roles["proxy"] += [
        pid for pid, st in procs.items() if st.ppid in managers and "haproxy" in cmdline(pid)
    ]
    return roles


def rss_mb(pids: list[int]) -> dict[int, float]:
    """RSS of each process in MiB."""
    return {pid: memory_bytes(pid)[0] / MIB for pid in pids}


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU used so far, per role (this process as `client`)."""
    procs = scan_processes()
    out = {role: sum(procs[p].cpu_s for p in ids if p in procs) for role, ids in pids.items()}
    own = os.times()
    out["client"] = own.user + own.system
    return out


def start_py_spy(
    roles: dict[str, list[int]], seconds: float, dest: Path
) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling the replicas and the proxy for `seconds` (GIL-holding stacks, collapsed
    text a flame graph tool reads, in `dest`); its processes."""
    exe = Path(sys.executable).parent / "py-spy"
    dest.mkdir(parents=True, exist_ok=True)
    files, procs = [], []
    for role in ("replica", "proxy"):
        for pid in roles[role]:
            out = dest / f"py-spy-{role}-{pid}.txt"
            cmd = [str(exe), "record", "--pid", str(pid), "--duration", str(round(seconds))]
            cmd += ["--rate", "50", "--nonblocking", "--gil", "--format", "raw", "-o", str(out)]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            files.append(out)
    console.print(f"  py-spy: {', '.join(str(f) for f in files)}")
    return procs


# --- the clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One request: which product, whether it was warm, how long it took, what went wrong."""

    product: int
    warm: bool
    ms: float
    error: str | None = None


Send = Callable[[str, str, bytes | None, dict[str, str]], Awaitable[tuple[int, bytes]]]
JSON_HEADERS = {"content-type": "application/json"}
MODEL_HEADER = "serve_multiplexed_model_id"
BODY_ERRORS = (ValueError, KeyError, IndexError, TypeError)


@dataclass
class Endpoint:
    """The endpoint as the clients see it: `send(method, path, body) -> (status, body)` over
    one keep-alive session, and the first answer seen of each kind of error (for the report)."""

    send: Send
    transport_errors: tuple[type[BaseException], ...]
    examples: dict[str, str] = field(default_factory=dict)

    async def fire(self, product: str) -> tuple[float, str | None]:
        """POST /forecast for one product: (milliseconds, error kind or None)."""
        body = json.dumps({"product_id": product}).encode()
        t0 = time.perf_counter()
        try:  # the header Serve routes multiplexed requests by: the replica holding the product
            status, content = await self.send("POST", "/forecast", body, {MODEL_HEADER: product})
            ms = 1000 * (time.perf_counter() - t0)
            if status != 200:
                return ms, self.error(f"http {status}", f"{product}: {content[:300]!r}")
            forecasts = json.loads(content)["forecasts"]
            if forecasts[0]["product_id"] != product or not forecasts[0]["rows"]:
                return ms, self.error("wrong body", f"{product}: {content[:300]!r}")
            return ms, None
        except (*self.transport_errors, *BODY_ERRORS) as exc:
            ms = 1000 * (time.perf_counter() - t0)
            return ms, self.error(type(exc).__name__, f"{product}: {exc!r}")

    def error(self, kind: str, detail: str) -> str:
        """Note the first example of this kind of error; returns the kind."""
        self.examples.setdefault(kind, detail[:300])
        return kind

    async def health(self, replicas: int) -> dict[int, Health]:
        """/healthz asked a few times per replica (the proxy picks one each time), by pid."""
        out: dict[int, Health] = {}
        for _ in range(4 * replicas):
            status, content = await self.send("GET", "/healthz", None, {})
            if status != 200:
                raise BenchError(f"GET /healthz answered {status}: {content[:300]!r}")
            body = json.loads(content)
            pid = int(body["pid"])
            out[pid] = Health(pid, int(body["models_loaded"]), int(body["max_models"]))
            if len(out) == replicas:
                break
        return out


@asynccontextmanager
async def connect(url: str, clients: int, library: str) -> AsyncIterator[Endpoint]:
    """The endpoint over httpx.AsyncClient or aiohttp: one keep-alive connection per client."""
    if library == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def send_aiohttp(
                method: str, path: str, body: bytes | None, headers: dict[str, str]
            ) -> tuple[int, bytes]:
                async with session.request(
                    method, url + path, data=body, headers=JSON_HEADERS | headers
                ) as resp:
                    return resp.status, await resp.read()

            yield Endpoint(send_aiohttp, (aiohttp.ClientError, TimeoutError))
        return
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S) as client:

        async def send_httpx(
            method: str, path: str, body: bytes | None, headers: dict[str, str]
        ) -> tuple[int, bytes]:
            resp = await client.request(
                method, url + path, content=body, headers=JSON_HEADERS | headers
            )
            return resp.status_code, resp.content

        yield Endpoint(send_httpx, (httpx.HTTPError,))


@dataclass
class ColdResult:
    """Single requests, one at a time: the very first, each cold product, then it warm."""

    first_ms: float
    cold_ms: list[float]
    warm_ms: list[float]
    errors: Counter[str] = field(default_factory=Counter)


async def measure_cold(ep: Endpoint, first: str, cold: list[str]) -> ColdResult:
    """Time the endpoint's first request, then each cold product twice in a row."""
    first_ms, error = await ep.fire(first)
    result = ColdResult(first_ms, [], [])
    if error:
        result.errors[error] += 1
    for product in cold:
        for times in (result.cold_ms, result.warm_ms):
            ms, error = await ep.fire(product)
            if error:
                result.errors[error] += 1
            else:
                times.append(ms)
    return result


@dataclass
class LoadResult:
    """The load phase: every request, the wall time and the server-side samples."""

    shots: list[Shot]
    wall_s: float
    cpu_s: dict[str, float]
    rss_start: dict[int, float]
    rss_end: dict[int, float]
    rss_peak: dict[int, float]
    health_end: dict[int, Health]
    window: tuple[float, float]  # wall-clock (epoch) start and end
    load_avg: tuple[float, float]  # the machine's 1-minute load average before and after


async def load_phase(
    ep: Endpoint,
    products: list[str],
    sequence: np.ndarray,
    clients: int,
    seconds: float,
    roles: dict[str, list[int]],
    replicas: int,
) -> LoadResult:
    """`clients` coroutines take the next product of `sequence` until it or the time runs out."""
    done: set[int] = set()  # products with a completed request: the next ones are warm
    shots: list[Shot] = []
    cursor = iter(sequence.tolist())
    replica_pids = roles["replica"]
    rss_start = rss_mb(replica_pids)
    peak = dict(rss_start)
    cpu_before = cpu_seconds(roles)
    load_before = os.getloadavg()[0]
    started = time.time()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def one_client() -> None:
        for product in cursor:
            if time.perf_counter() >= deadline:
                return
            warm = product in done
            ms, error = await ep.fire(products[product])
            shots.append(Shot(product, warm, ms, error))
            if error is None:
                done.add(product)

    async def sample_memory() -> None:
        while True:
            await asyncio.sleep(2.0)
            for pid, mb in rss_mb(replica_pids).items():
                peak[pid] = max(peak.get(pid, 0.0), mb)

    sampler = asyncio.create_task(sample_memory())
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall_s = time.perf_counter() - t0
    sampler.cancel()
    cpu_after = cpu_seconds(roles)
    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
    rss_end = rss_mb(replica_pids)
    health = await ep.health(replicas)
    window = (started, started + wall_s)
    load_avg = (load_before, os.getloadavg()[0])
    return LoadResult(shots, wall_s, cpu, rss_start, rss_end, peak, health, window, load_avg)


@dataclass(frozen=True)
class LruPoint:
    """The replicas after `requests` distinct never-requested products."""

    requests: int
    models_loaded: int
    rss_mb: float  # summed over replicas
    errors: int


async def lru_phase(
    ep: Endpoint,
    fresh: list[str],
    clients: int,
    replicas: int,
    replica_pids: list[int],
    steps: int = 8,
) -> tuple[list[LruPoint], float]:
    """Request each of `fresh` once, `clients` at a time, sampling the replicas `steps` times;
    also returns the phase's requests per second (every one of them a cold load)."""
    points: list[LruPoint] = []
    errors = 0
    chunk = max(1, -(-len(fresh) // steps))
    gate = asyncio.Semaphore(clients)
    t0 = time.perf_counter()

    async def one(product: str) -> str | None:
        async with gate:
            return (await ep.fire(product))[1]

    for start in range(0, len(fresh), chunk):
        outcomes = await asyncio.gather(*(one(p) for p in fresh[start : start + chunk]))
        errors += sum(e is not None for e in outcomes)
        health = await ep.health(replicas)
        loaded = sum(h.models_loaded for h in health.values())
        rss = sum(rss_mb(replica_pids).values())
        points.append(LruPoint(start + len(outcomes), loaded, rss, errors))
    rate = len(fresh) / (time.perf_counter() - t0) if fresh else 0.0
    return points, rate


@dataclass(frozen=True)
class Ceiling:
    """One request repeated by every client: what Serve and the app cost at their cheapest."""

    route: str
    requests: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    cpu_ms_per_request: dict[str, float]


async def ceiling(
    ep: Endpoint,
    route: str,
    body: bytes | None,
    clients: int,
    seconds: float,
    roles: dict[str, list[int]],
) -> Ceiling:
    """`clients` clients sending the same request for `seconds`: GET /healthz (Serve alone) or
    a forecast of one loaded product (no registry read, no load, a cached forecast)."""
    method = "GET" if body is None else "POST"
    times: list[float] = []
    errors = 0
    before = cpu_seconds(roles)
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def one_client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                status, _ = await ep.send(method, route, body, {})
            except ep.transport_errors:
                status = 0
            if status == 200:
                times.append(1000 * (time.perf_counter() - sent))
            else:
                errors += 1

    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    after = cpu_seconds(roles)
    n = len(times) + errors
    cpu = {k: round(1000 * (after[k] - before[k]) / n, 2) for k in after} if n else {}
    return Ceiling(route, n, n / wall, percentile(times, 50), percentile(times, 99), errors, cpu)


# --- the run --------------------------------------------------------------------------------


def zipf_ranks(n: int, s: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` draws of ranks 0..n-1 with P(rank k) proportional to (k + 1) ** -s."""
    weights = np.arange(1, n + 1, dtype="float64") ** -s
    return rng.choice(n, size=size, p=weights / weights.sum())


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, None when there is nothing to rank."""
    return float(np.percentile(values, q)) if values else None


@dataclass
class Measured:
    """The three phases against one running endpoint, and Serve's processes."""

    cold: ColdResult
    load: LoadResult
    lru: list[LruPoint]
    lru_rate: float
    serve_pids: dict[str, list[int]]
    error_examples: dict[str, str]
    proxy_rss_mb: float
    ceilings: list[Ceiling]


async def measure(args: argparse.Namespace, url: str, popular: list[str], logs: Path) -> Measured:
    """Cold loads, then the Zipf load, then the LRU bound, over one keep-alive client."""
    rng = np.random.default_rng(args.seed)
    n = len(popular)
    cold = popular[-1 - args.cold_samples : -1]  # the least popular: not loaded, rarely drawn
    sequence = zipf_ranks(n, args.zipf, args.max_requests, rng)
    async with connect(url, args.clients, args.client) as ep:
        health = await ep.health(args.replicas)
        roles = serve_processes(set(health))
        console.print(f"  Serve processes: {roles}")
        cold_result = await measure_cold(ep, popular[-1], cold)
        console.print(
            f"cold: first request {cold_result.first_ms:.0f} ms, cold median"
            f" {percentile(cold_result.cold_ms, 50) or 0:.1f} ms over {len(cold_result.cold_ms)}"
        )
        console.print(f"load: {args.clients} clients, {args.seconds:.0f} s, Zipf s={args.zipf}")
        spies = start_py_spy(roles, args.seconds, logs) if args.py_spy else []
        load = await load_phase(
            ep, popular, sequence, args.clients, args.seconds, roles, args.replicas
        )
        for spy in spies:
            spy.wait(timeout=60)
        touched = {s.product for s in load.shots} | set(range(n - 1 - args.cold_samples, n))
        fresh = [popular[i] for i in range(n) if i not in touched][: args.lru_products]
        console.print(f"LRU: {len(fresh):,} distinct products never requested before")
        lru, lru_rate = await lru_phase(ep, fresh, args.clients, args.replicas, roles["replica"])
        hot = json.dumps({"product_id": popular[0]}).encode()
        ceilings = []
        if args.ceiling_seconds > 0:
            console.print(
                f"ceilings: GET /healthz, then the most popular product, {args.clients}"
                f" clients, {args.ceiling_seconds:.0f} s each"
            )
            for route, body in (("/healthz", None), ("/forecast", hot)):
                ceilings.append(
                    await ceiling(ep, route, body, args.clients, args.ceiling_seconds, roles)
                )
    proxy_rss = sum(rss_mb(roles["proxy"]).values())
    return Measured(cold_result, load, lru, lru_rate, roles, ep.examples, proxy_rss, ceilings)


@dataclass
class Run:
    """Everything one benchmark run measured."""

    args: argparse.Namespace
    registration: Registration
    served: int
    measured: Measured
    serve_logs: Path | None


def summarize(run: Run) -> dict[str, Any]:
    """The JSON report: the required keys first, then the detail behind them."""
    args, m = run.args, run.measured
    load = m.load
    ok = [s for s in load.shots if s.error is None]
    warm = [s.ms for s in ok if s.warm]
    first = [s.ms for s in ok if not s.warm]
    errors = Counter(s.error for s in load.shots if s.error) + m.cold.errors
    if m.lru and m.lru[-1].errors:
        errors["lru phase"] += m.lru[-1].errors
    for c in m.ceilings:
        if c.errors:
            errors[f"ceiling {c.route}"] += c.errors
    rss_start = sum(load.rss_start.values())
    rss_end = sum(load.rss_end.values())
    loaded = sum(h.models_loaded for h in load.health_end.values())
    requests = len(load.shots)
    rps = requests / load.wall_s if load.wall_s else 0.0
    bound = lru_bound(m.lru, args.max_models * args.replicas)
    report: dict[str, Any] = {
        "products": run.served,
        "clients": args.clients,
        "seconds": round(load.wall_s, 2),
        "replicas": args.replicas,
        "max_models": args.max_models,
        "requests": requests,
        "requests_per_s": round(rps, 1),
        "p50_ms": percentile([s.ms for s in ok], 50),
        "p99_ms": percentile([s.ms for s in ok], 99),
        "warm_p50_ms": percentile(warm, 50),
        "warm_p99_ms": percentile(warm, 99),
        "cold_load_ms": percentile(m.cold.cold_ms, 50),
        "cold_load_p95_ms": percentile(m.cold.cold_ms, 95),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "error_examples": m.error_examples,
        "replica_rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
        "models_loaded": loaded,
    }
    inside = replica_side_ms(run.serve_logs, *load.window)
    report["detail"] = {
        "replica_side_p50_ms": percentile(inside, 50),
        "replica_side_p99_ms": percentile(inside, 99),
        "replica_side_requests": len(inside),
        "warm_requests": len(warm),
        "first_requests_in_load": len(first),
        "first_request_in_load_p50_ms": percentile(first, 50),
        "first_request_in_load_p99_ms": percentile(first, 99),
        "max_ms": max((s.ms for s in ok), default=None),
        "distinct_products_in_load": len({s.product for s in load.shots}),
        "endpoint_first_request_ms": m.cold.first_ms,
        "cold_samples": len(m.cold.cold_ms),
        "idle_warm_p50_ms": percentile(m.cold.warm_ms, 50),
        "idle_warm_p95_ms": percentile(m.cold.warm_ms, 95),
        "cpu_s_in_load": {k: round(v, 2) for k, v in load.cpu_s.items()},
        "cpu_ms_per_request": {
            k: round(1000 * v / requests, 2) for k, v in load.cpu_s.items() if requests
        },
        "replica_rss_mb_by_pid": {
            str(pid): {
                "start": round(load.rss_start.get(pid, 0.0), 1),
                "peak": round(load.rss_peak.get(pid, 0.0), 1),
                "end": round(load.rss_end.get(pid, 0.0), 1),
            }
            for pid in load.rss_end
        },
        "proxy_rss_mb": round(m.proxy_rss_mb, 1),
        "lru_phase": [asdict(p) for p in m.lru],
        "lru_cold_loads_per_s": round(m.lru_rate, 1),
        "lru_growth_after_full": bound,
        "ceilings": [asdict(c) for c in m.ceilings],
    }
    report["targets"] = targets(report, bound)
    report["meta"] = metadata(run)
    return report


def lru_bound(points: list[LruPoint], capacity: int) -> float | None:
    """Relative RSS growth from the first sample with the LRU full to the last (None if it
    never filled)."""
    full = [p for p in points if p.models_loaded >= capacity]
    if len(full) < 2 or not full[0].rss_mb:
        return None
    return round(full[-1].rss_mb / full[0].rss_mb - 1, 4)


def targets(report: dict[str, Any], bound: float | None) -> list[dict[str, Any]]:
    """The issue's goals against what was measured (reported, never asserted)."""
    warm_p99 = report["warm_p99_ms"]
    loaded_ok = report["models_loaded"] <= report["max_models"] * report["replicas"]
    return [
        {
            "target": "errors",
            "goal": "0",
            "value": report["errors"],
            "met": report["errors"] <= TARGETS["errors"],
        },
        {
            "target": "warm p99",
            "goal": "<= 50 ms",
            "value": None if warm_p99 is None else round(warm_p99, 1),
            "met": warm_p99 is not None and warm_p99 <= TARGETS["warm_p99_ms"],
        },
        {
            "target": "throughput",
            "goal": ">= 300 requests/s",
            "value": report["requests_per_s"],
            "met": report["requests_per_s"] >= TARGETS["requests_per_s"],
        },
        {
            "target": "memory bounded by the LRU",
            "goal": "models_loaded <= max_models; RSS grows < 10% once the LRU is full",
            "value": f"{report['models_loaded']} loaded; growth {bound}",
            "met": loaded_ok and bound is not None and bound < 0.10,
        },
    ]


def metadata(run: Run) -> dict[str, Any]:
    """What was run, where, on which versions."""
    from factory.adapters.lineage import git_commit

    args = run.args
    packages = ("ray", "fastapi", "mlflow", "httpx", "scikit-learn", "lightgbm")
    return {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "panel_products": run.registration.products,
        "registration": asdict(run.registration),
        "fleet": "bench/serve_load.py LIGHT_FLEET" if not run.registration.reused else "reused",
        "zipf_s": args.zipf,
        "max_requests": args.max_requests,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "load_avg_1min_around_load_phase": run.measured.load.load_avg,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "git_commit": git_commit(REPO),
        "client": f"{args.client} on one event loop, one keep-alive connection per client",
        "warm_definition": "an earlier request for the same product had completed (200) before"
        " this one was sent; a warm product may have been evicted by the LRU since",
        "memory_method": "RSS from /proc/<pid>/smaps_rollup of the Serve replica processes"
        " (pids from GET /healthz), sampled every 2 s in the load phase",
    }


def show(report: dict[str, Any]) -> None:
    """The result and target tables."""
    d = report["detail"]

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    table = Table(
        title=f"{report['products']:,} products, {report['clients']} clients,"
        f" {report['replicas']} replica(s), max_models {report['max_models']}",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("requests (load phase)", f"{report['requests']:,} in {report['seconds']:.1f} s"),
        ("requests/s", f"{report['requests_per_s']:.1f}"),
        ("p50 / p99, all (ms)", f"{ms(report['p50_ms'])} / {ms(report['p99_ms'])}"),
        ("p50 / p99, warm (ms)", f"{ms(report['warm_p50_ms'])} / {ms(report['warm_p99_ms'])}"),
        (
            "p50 / p99, first request of a product under load (ms)",
            f"{ms(d['first_request_in_load_p50_ms'])} / {ms(d['first_request_in_load_p99_ms'])}",
        ),
        (
            "p50 / p99 inside the replica (Serve access log)",
            f"{ms(d['replica_side_p50_ms'])} / {ms(d['replica_side_p99_ms'])}",
        ),
        ("warm / first requests", f"{d['warm_requests']:,} / {d['first_requests_in_load']:,}"),
        ("distinct products requested", f"{d['distinct_products_in_load']:,}"),
        (
            "cold load, median / p95 (ms)",
            f"{ms(report['cold_load_ms'])} / {ms(report['cold_load_p95_ms'])}",
        ),
        ("same request warm, idle, median (ms)", ms(d["idle_warm_p50_ms"])),
        ("endpoint's first request (ms)", ms(d["endpoint_first_request_ms"])),
        ("errors", f"{report['errors']} {report['errors_by_kind'] or ''}"),
        (
            "replica RSS start / end (MiB)",
            f"{report['replica_rss_mb']['start']:.0f} / {report['replica_rss_mb']['end']:.0f}",
        ),
        ("models loaded", str(report["models_loaded"])),
        ("CPU ms per request", ", ".join(f"{k} {v}" for k, v in d["cpu_ms_per_request"].items())),
        (
            "machine load average (1 min) before / after",
            "{:.1f} / {:.1f}".format(*report["meta"]["load_avg_1min_around_load_phase"]),
        ),
        ("cold loads/s (LRU phase)", f"{d['lru_cold_loads_per_s']:.1f}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for kind, example in report["error_examples"].items():
        console.print(f"first {kind}: {example}", markup=False)
    lru = Table(
        "distinct new products",
        "models loaded",
        "replica RSS (MiB)",
        "errors",
        title="LRU phase",
        title_justify="left",
    )
    for p in d["lru_phase"]:
        lru.add_row(
            f"{p['requests']:,}", str(p["models_loaded"]), f"{p['rss_mb']:.0f}", str(p["errors"])
        )
    console.print(lru)
    if d["ceilings"]:
        top = Table(
            "same request from every client",
            "requests/s",
            "p50 (ms)",
            "p99 (ms)",
            "errors",
            "CPU ms per request",
            title="ceilings",
            title_justify="left",
        )
        for c in d["ceilings"]:
            route = (
                "GET /healthz" if c["route"] == "/healthz" else "POST /forecast, one hot product"
            )
            cpu = ", ".join(f"{k} {v}" for k, v in c["cpu_ms_per_request"].items())
            top.add_row(
                route,
                f"{c['requests_per_s']:.1f}",
                ms(c["p50_ms"]),
                ms(c["p99_ms"]),
                str(c["errors"]),
                cpu,
            )
        console.print(top)
    goals = Table(
        "target",
        "goal",
        "value",
        "met",
        title="targets (reported, not asserted)",
        title_justify="left",
    )
    for t in report["targets"]:
        goals.add_row(t["target"], t["goal"], str(t["value"]), "yes" if t["met"] else "no")
    console.print(goals)


def write_report(report: dict[str, Any], out: Path, products: int) -> Path:
    """bench/results/serve-<date>.json (serve-<date>-<n>.json off the default size)."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if products == DEFAULT_PRODUCTS else f"-{products}"
    path = out / f"serve-{datetime.now(UTC):%Y%m%d}{suffix}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--products", type=int, default=DEFAULT_PRODUCTS, help="products in the panel")
    add("--clients", type=int, default=8, help="concurrent clients (default 8)")
    add("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    add("--max-requests", type=int, default=200_000, help="cap on the load phase's requests")
    add("--replicas", type=int, default=2, help="Serve replicas (default 2: one per core here)")
    add("--max-models", type=int, default=1000, help="LRU size per replica (default 1000)")
    add("--zipf", type=float, default=1.1, help="Zipf exponent of product popularity")
    add("--cold-samples", type=int, default=30, help="cold products timed one at a time")
    add(
        "--lru-products",
        type=int,
        default=None,
        help="new products in the LRU phase (default 2 x max-models x replicas)",
    )
    add(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="HTTP client library (aiohttp: ~0.4 ms of this machine's CPU per request, httpx ~1.7)",
    )
    add(
        "--ceiling-seconds",
        type=float,
        default=10.0,
        help="seconds of each ceiling phase (GET /healthz; one hot product); 0 skips them",
    )
    add("--py-spy", action="store_true", help="profile replicas and proxy in the load phase")
    add("--seed", type=int, default=11, help="seed of popularity and request order")
    add("--home", type=Path, default=None, help="FACTORY_HOME to build (or reuse); temp if unset")
    add("--reuse", action="store_true", help="use the models already registered in --home")
    add("--register-only", action="store_true", help="register the fleet, then stop")
    add("--keep", action="store_true", help="keep the temporary home (for --home/--reuse)")
    add("--out", type=Path, default=REPO / "bench" / "results", help="JSON folder")
    args = parser.parse_args(argv)
    if args.reuse and args.home is None:
        parser.error("--reuse needs --home")
    if args.products < 2 * args.cold_samples + 2 or min(args.clients, args.replicas) < 1:
        parser.error("need --products >= 2 x --cold-samples + 2 and at least 1 client/replica")
    if args.lru_products is None:
        args.lru_products = 2 * args.max_models * args.replicas
    return args


def main(argv: list[str] | None = None) -> None:
    """Register (or reuse), serve, load, print and save."""
    args = parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    home.mkdir(parents=True, exist_ok=True)
    keep = args.home is not None or args.keep or args.register_only
    try:
        report = bench(args, use_home(home.resolve()))
    except BaseException:
        keep = True
        raise
    finally:
        if keep and args.home is None:
            console.print(f"home kept: --home {home} --reuse")
        elif not keep:
            shutil.rmtree(home, ignore_errors=True)
    if report is not None:
        show(report)
        path = write_report(report, args.out, args.products)
        console.print(f"wrote {path}")


def bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """The registered fleet served and measured; None with --register-only."""
    registration, served = registered(settings, args.products, args.reuse)
    if args.register_only:
        return None
    if not served:
        raise BenchError(f"no product reached production in {settings.home}")
    popular = [str(p) for p in np.random.default_rng(args.seed).permutation(served)]
    with endpoint(settings, args.replicas, args.max_models) as serving:
        logs = settings.resolved_home / "bench-logs"
        measured = asyncio.run(measure(args, serving.url, popular, logs))
    return summarize(Run(args, registration, len(served), measured, serving.logs))


if __name__ == "__main__":
    main()
