"""The production manifest: the model version each product serves in production, kept in git.

`dump_manifest` writes one line per product, sorted, so a review diff shows exactly the
products a change promotes, rolls back, retires or restores; `diff_manifest` turns two
manifests into those changes; `digest_mismatches` checks a manifest against the registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.core.errors import UserError
from factory.core.fleet import _duplicated_keys

HEADER = """\
# Production manifest: the model version (and its digest) each product serves in production.
# Change a version to promote or roll back, add a product to restore it, remove one to retire
# it (with --prune). `factory manifest apply <file>` shows the changes; add --execute to make
# them. `factory manifest export` writes the current state.
"""
STR_TAG = "tag:yaml.org,2002:str"
PLAIN = re.compile(r"\w[\w.\-/]*")  # ids written without quotes, unless YAML reads them as non-text
# also quoted: what YAML 1.1 (y, n) or YAML 1.2 (1e3) readers other than PyYAML take for non-text
AMBIGUOUS = re.compile(r"[yYnN]|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?")
SIMPLE_KEY = 1000  # longer keys are written as explicit `? key` entries
_RESOLVER = yaml.resolver.Resolver()
Action = Literal["promote", "rollback", "retire", "restore"]


class ManifestError(UserError, ValueError):
    """A mistake in a production manifest, with the file, line or field in its message."""

    hint = "fix the manifest as shown: `version: 1`, then `production:` with one line per product"


class ManifestEntry(BaseModel):
    """What one product serves in production: a version of its production model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, strict=True)
    digest: str | None = None  # sha256 of the model folder's files, checked against the registry


class Manifest(BaseModel):
    """Every product production serves, by product id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    production: dict[str, ManifestEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class ManifestChange:
    """One product whose production version the desired manifest changes."""

    product_id: str
    current: int | None  # None: not in production now (retired or never promoted)
    target: int | None  # None: retire it
    action: Action
    digest: str | None = None  # the desired version's digest, when the manifest gives one


def dump_manifest(manifest: Manifest) -> str:
    """The manifest as YAML: a header, then one `id: {version: N, digest: ...}` line per product,
    sorted by id; an id or digest YAML would read as anything but that text is quoted."""
    lines = [f"version: {manifest.version}", "production:" + ("" if manifest.production else " {}")]
    for pid, entry in sorted(manifest.production.items()):
        value = f"{{version: {entry.version}"
        value += "}" if entry.digest is None else f", digest: {_scalar(entry.digest)}}}"
        key = _scalar(pid)
        simple = len(key) <= SIMPLE_KEY  # YAML readers scan this far for a key's colon
        lines += [f"  {key}: {value}"] if simple else [f"  ? {key}", f"  : {value}"]
    return HEADER + "\n".join(lines) + "\n"


def _scalar(text: str) -> str:
    """`text` as a YAML scalar on one line: plain when that reads back as the same string,
    else double-quoted with escapes (line breaks, quotes, control and invisible characters)."""
    plain = PLAIN.fullmatch(text) and not AMBIGUOUS.fullmatch(text)
    if plain and _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == STR_TAG:
        return text
    quoted = yaml.safe_dump(text, default_style='"', allow_unicode=True, width=1 << 30)
    return quoted.removesuffix("\n")


def load_manifest(text: str, source: str) -> Manifest:
    """Parse and validate a manifest; raise a one-line ManifestError naming `source`."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ManifestError(f"{where}: not valid YAML ({problem})") from None
    if data is None:
        raise ManifestError(f"{source}: empty manifest; expected `version: 1` and `production:`")
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ManifestError(f"{source}: expected a mapping with `production:`, not a {kind}")
    problems = [f"{source}:{line}: {msg}" for line, msg in _duplicated_keys(node)]
    problems += _unquoted_ids(node, source)
    if problems:
        raise ManifestError(_one_line(problems))
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{source}: {_dotted(e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        ]
        raise ManifestError(_one_line(lines)) from None


def _unquoted_ids(root: yaml.Node | None, source: str) -> list[str]:
    """Product ids YAML reads as numbers, booleans, null or dates: they must be quoted."""
    if not isinstance(root, yaml.MappingNode):
        return []
    production = next((v for k, v in root.value if k.value == "production"), None)
    if not isinstance(production, yaml.MappingNode):
        return []
    return [
        f"{source}:{k.start_mark.line + 1}: production.{k.value}: a product id is text;"
        f" quote it ('{k.value}')"
        for k, _ in production.value
        if isinstance(k, yaml.ScalarNode) and k.tag != STR_TAG
    ]


def _dotted(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _one_line(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def diff_manifest(
    current: Manifest, desired: Manifest, prune: bool = False
) -> list[ManifestChange]:
    """The changes that make production serve `desired`, sorted by product id.

    A product missing from `desired` is retired only with `prune`; otherwise it is left as is.
    """
    changes = []
    for pid in sorted(current.production.keys() | desired.production.keys()):
        now, want = current.production.get(pid), desired.production.get(pid)
        if want is None:
            if prune and now is not None:
                changes.append(ManifestChange(pid, now.version, None, "retire"))
            continue
        if now is not None and now.version == want.version:
            continue
        action: Action = (
            "restore" if now is None else "promote" if want.version > now.version else "rollback"
        )
        was = None if now is None else now.version
        changes.append(ManifestChange(pid, was, want.version, action, want.digest))
    return changes


def digest_mismatches(desired: Manifest, known: dict[str, dict[int, str | None]]) -> list[str]:
    """One line per product whose desired version the registry lacks (`known`: product ->
    version -> digest) or whose digest differs from the registry's (None is not compared)."""
    lines = []
    for pid, entry in sorted(desired.production.items()):
        versions = known.get(pid, {})
        if entry.version not in versions:
            have = f"its newest is v{max(versions)}" if versions else "it has no versions"
            lines.append(f"{pid}: v{entry.version} is not in the registry ({have})")
            continue
        theirs = versions[entry.version]
        if entry.digest is not None and theirs is not None and entry.digest != theirs:
            lines.append(
                f"{pid}: v{entry.version} digest differs: manifest {entry.digest},"
                f" registry {theirs}"
            )
    return lines
