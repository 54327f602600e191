"""Reading the registry for a fleet: current models, champions and serving versions."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.exceptions import MlflowException
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModelAlias,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from factory.adapters.registry.names import CURRENT_TAG, PRODUCT_TAG
from factory.adapters.registry.sql_writer import model_tags
from factory.adapters.registry.verified import SIGNATURE_TAGS, VersionFiles
from factory.core.drift import ProductionModel

FEW = 200  # up to this many products, a tracking server is asked model by model, not searched
PAGE = 1000


def sql_store(client: MlflowClient) -> SqlAlchemyStore | None:
    """MLflow's registry store when it is a database the factory reaches directly."""
    store = client._get_registry_client().store
    return store if isinstance(store, SqlAlchemyStore) else None


def current_records(
    client: MlflowClient, name_prefix: str, names: dict[str, str] | None
) -> dict[str, dict[str, Any]]:
    """product id -> the `factory.current` record of its registered model.

    `names` maps the wanted products to their model names (None: every model under the
    prefix). One query on a database store; else model by model for a few products, or a
    few paged searches.
    """
    keys = (CURRENT_TAG, PRODUCT_TAG)
    store = sql_store(client)
    if store is not None:
        wanted = None if names is None or len(names) > FEW else names.values()
        found = list(model_tags(store, name_prefix, keys, wanted).values())
    elif names is not None and len(names) <= FEW:
        found = [_model_tags(client, name) for name in names.values()]
    else:
        found = _search_tags(client, name_prefix)
    out = {t[PRODUCT_TAG]: json.loads(t[CURRENT_TAG]) for t in found if all(k in t for k in keys)}
    return out if names is None else {p: out[p] for p in names if p in out}


def _model_tags(client: MlflowClient, name: str) -> dict[str, str]:
    rm = _registered_model(client, name)
    return {} if rm is None else dict(rm.tags or {})


def _search_tags(client: MlflowClient, name_prefix: str) -> list[dict[str, str]]:
    return _search_names_tags(client, name_prefix)[1]


def _search_names_tags(
    client: MlflowClient, name_prefix: str
) -> tuple[list[str], list[dict[str, str]]]:
    """The names and tags of every registered model under the prefix (paged searches)."""
    found = pages(
        lambda token: client.search_registered_models(
            filter_string=f"name LIKE '{name_prefix}%'", max_results=PAGE, page_token=token
        )
    )
    return [rm.name for rm in found], [dict(rm.tags or {}) for rm in found]


def pages(search: Callable[[str | None], PagedList[Any]]) -> list[Any]:
    """Every item of a paged MLflow search (`search(page_token)`)."""
    out: list[Any] = []
    token = None
    while True:
        page = search(token)
        out += list(page)
        token = page.token
        if not token:
            return out


def version_tags(
    client: MlflowClient, name_prefix: str, wanted: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Registered model name -> the tags of one version of it (`wanted`: name -> version),
    read in a few paged searches over the models under the prefix."""
    out: dict[str, dict[str, str]] = {}
    token = None
    while wanted:
        page = client.search_model_versions(
            f"name LIKE '{name_prefix}%'", max_results=10_000, page_token=token
        )
        for mv in page:
            if wanted.get(mv.name) == str(mv.version):
                out[mv.name] = dict(mv.tags or {})
        token = page.token
        if not token:
            break
    return out


def version_files(
    client: MlflowClient, name_prefix: str, wanted: dict[str, str]
) -> dict[str, VersionFiles]:
    """Registered model name -> where one version of it keeps its files, with its signature
    tags (`wanted`: name -> version; names under the prefix).

    Two queries on a database store; else a few paged searches over the prefix (a production
    copy's files are its staging original's), or call by call for a few models."""
    if not wanted:
        return {}
    store = sql_store(client)
    if store is not None:
        rows = _version_rows(store, name_prefix, wanted)
    elif len(wanted) <= FEW:
        calls = registry_calls(client)
        rows = {}
        for name, version in wanted.items():
            try:
                mv = calls.get_model_version(name, version)
                uri = calls.get_model_version_download_uri(name, version)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue
            rows[name] = (str(mv.source or ""), uri, dict(mv.tags or {}))
    else:
        rows = _searched_rows(client, name_prefix, wanted)
    keys = (PRODUCT_TAG, *SIGNATURE_TAGS)
    return {
        name: VersionFiles(
            tags.get(PRODUCT_TAG, name),
            name,
            wanted[name],
            uri,
            {k: v for k, v in tags.items() if k in keys},
            source,
        )
        for name, (source, uri, tags) in rows.items()
    }


Row = tuple[str, str, dict[str, str]]  # source, download URI, tags


def _version_rows(
    store: SqlAlchemyStore, name_prefix: str, wanted: dict[str, str]
) -> dict[str, Row]:
    """The wanted versions' source, download URI (what the store's
    `get_model_version_download_uri` answers: storage location, else source) and signature
    tags, in one query each."""
    ws = store._get_active_workspace()
    few = list(wanted) if len(wanted) <= FEW else None
    v, t = SqlModelVersion.__table__, SqlModelVersionTag.__table__

    def where(table: Any) -> list[Any]:
        out = [table.c.workspace == ws, table.c.name.startswith(name_prefix, autoescape=True)]
        return out + ([table.c.name.in_(few)] if few is not None else [])

    versions = sqlalchemy.select(v.c.name, v.c.version, v.c.source, v.c.storage_location).where(
        *where(v), v.c.current_stage != STAGE_DELETED_INTERNAL
    )
    keys = (PRODUCT_TAG, *SIGNATURE_TAGS)
    tags = sqlalchemy.select(t.c.name, t.c.version, t.c.key, t.c.value).where(
        *where(t), t.c.key.in_(keys)
    )
    rows: dict[str, Row] = {}
    with store.ManagedSessionMaker() as session:
        for name, version, source, location in session.execute(versions):
            if wanted.get(name) == str(version):
                rows[name] = (source or "", location or source or "", {})
        for name, version, key, value in session.execute(tags):
            if name in rows and wanted[name] == str(version):
                rows[name][2][key] = value
    return rows


def _searched_rows(
    client: MlflowClient, name_prefix: str, wanted: dict[str, str]
) -> dict[str, Row]:
    """The wanted versions from paged searches over every version under the prefix; a copy's
    download URI is its original's source (asked for one by one when not under the prefix)."""
    found = pages(
        lambda token: client.search_model_versions(
            f"name LIKE '{name_prefix}%'", max_results=10_000, page_token=token
        )
    )
    sources = {(mv.name, str(mv.version)): str(mv.source or "") for mv in found}
    rows: dict[str, Row] = {}
    for mv in found:
        if wanted.get(mv.name) != str(mv.version):
            continue
        source = str(mv.source or "")
        original = copied_from(source)
        uri = source if original is None else sources.get(original, "")
        if not uri or uri.startswith("models:/"):
            uri = registry_calls(client).get_model_version_download_uri(mv.name, mv.version)
        rows[mv.name] = (source, uri, dict(mv.tags or {}))
    return rows


def copied_from(source: str) -> tuple[str, str] | None:
    """(name, version) a `models:/<name>/<version>` source names; None for any other source."""
    if not source.startswith("models:/"):
        return None
    name, _, version = source.removeprefix("models:/").rpartition("/")
    return (name, version) if name and version.isdigit() else None


def model_lineage(client: MlflowClient, mv: ModelVersion, alias: str) -> dict[str, Any]:
    """The whole chain behind a model version: source run and tags (a copy's from its source)."""
    tags = dict(mv.tags)
    source = str(mv.source or "")
    if "factory.data_fingerprint" not in tags and source.startswith("models:/"):
        src_name, src_version = source.removeprefix("models:/").rsplit("/", 1)
        tags = {**dict(client.get_model_version(src_name, src_version).tags), **tags}
        tags["factory.copied_from"] = source
    return {
        "model": mv.name,
        "alias": alias,
        "version": mv.version,
        "source": mv.source,
        "run_id": mv.run_id,
        "created": mv.creation_timestamp,
        "tags": tags,
    }


def production_model(pid: str, name: str, version: str, tags: dict[str, str]) -> ProductionModel:
    """A production version with its backtest WAPE and training cutoff, from its tags."""
    cutoff = tags.get("factory.trained_until", "?")
    return ProductionModel(
        pid,
        name,
        version,
        _float(tags.get("factory.metric.wape")),
        pd.Timestamp(cutoff) if cutoff != "?" else None,
    )


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def model_tags_by_name(
    client: MlflowClient,
    name_prefix: str,
    keys: tuple[str, ...],
    names: list[str] | None = None,
) -> dict[str, dict[str, str]]:
    """Registered model name -> these tags, for every model under the prefix (or only the
    named ones): one query on a database; else model by model for a few, or paged searches."""
    store = sql_store(client)
    if store is not None:
        few = names if names is not None and len(names) <= FEW else None
        found = model_tags(store, name_prefix, keys, few)
    elif names is not None and len(names) <= FEW:
        found = {n: _model_tags(client, n) for n in names}
    else:
        found = dict(zip(*_search_names_tags(client, name_prefix), strict=True))
    wanted = None if names is None else set(names)
    return {
        n: {k: v for k, v in tags.items() if k in keys}
        for n, tags in found.items()
        if wanted is None or n in wanted
    }


@dataclass(frozen=True)
class ModelState:
    """A registered model's aliases (alias -> version) and some of its tags."""

    aliases: dict[str, str]
    tags: dict[str, str]


def model_states(
    client: MlflowClient,
    name_prefix: str,
    keys: tuple[str, ...],
    names: list[str] | None = None,
) -> dict[str, ModelState]:
    """Registered model name -> its aliases and these tags, for every model under the prefix
    (or only the named ones) that has either: two queries on a database; else model by model
    for a few, or paged searches (slow for many: ~1 ms per model on SQLite)."""
    store = sql_store(client)
    if store is not None:
        few = names if names is not None and len(names) <= FEW else None
        tags = model_tags(store, name_prefix, keys, few)
        aliases = _aliases(store, name_prefix, few)
    else:
        if names is not None and len(names) <= FEW:
            found = [rm for n in names if (rm := _registered_model(client, n)) is not None]
        else:
            found = pages(
                lambda token: client.search_registered_models(
                    filter_string=f"name LIKE '{name_prefix}%'", max_results=PAGE, page_token=token
                )
            )
        tags = {rm.name: dict(rm.tags or {}) for rm in found}
        aliases = {rm.name: {a: str(v) for a, v in (rm.aliases or {}).items()} for rm in found}
    wanted = None if names is None else set(names)
    return {
        n: ModelState(aliases.get(n, {}), {k: v for k, v in tags.get(n, {}).items() if k in keys})
        for n in {*tags, *aliases}
        if wanted is None or n in wanted
    }


def _registered_model(client: MlflowClient, name: str) -> Any:
    try:
        return registry_calls(client).get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


def _aliases(
    store: SqlAlchemyStore, name_prefix: str, names: list[str] | None
) -> dict[str, dict[str, str]]:
    """Registered model name -> alias -> version, in one query."""
    a = SqlRegisteredModelAlias.__table__
    query = sqlalchemy.select(a.c.name, a.c.alias, a.c.version).where(
        a.c.workspace == store._get_active_workspace(),
        a.c.name.startswith(name_prefix, autoescape=True),
    )
    if names is not None:
        query = query.where(a.c.name.in_(names))
    out: dict[str, dict[str, str]] = {}
    with store.ManagedSessionMaker() as session:
        for name, alias, version in session.execute(query):
            out.setdefault(name, {})[alias] = str(version)
    return out


def versions_by_key(
    client: MlflowClient, wanted: list[tuple[str, int]]
) -> dict[tuple[str, int], ModelVersion]:
    """(name, version) -> the model version, for these versions: one search per 100 models
    (over a database store or a tracking server), not one call each."""
    names = sorted({n for n, _ in wanted})
    keep = set(wanted)
    out: dict[tuple[str, int], ModelVersion] = {}
    for start in range(0, len(names), 100):
        quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in names[start : start + 100])
        search = functools.partial(client.search_model_versions, f"name IN ({quoted})", 10_000)
        for mv in pages(lambda token: search(page_token=token)):  # noqa: B023
            if (mv.name, int(mv.version)) in keep:
                out[(mv.name, int(mv.version))] = mv
    return out


def registry_calls(client: MlflowClient) -> Any:
    """The client's registry client: the same calls without the `MlflowClient` wrapper's
    extra GET per write (it checks that the model is not a prompt: ours never are), so half
    the requests to a tracking server."""
    return client._get_registry_client()
