"""A throwaway PostgreSQL database on the machine's server (trust auth on 127.0.0.1:5432)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator


@contextlib.contextmanager
def temporary_database(
    prefix: str, host: str = "127.0.0.1", port: int = 5432, user: str = "root"
) -> Iterator[str]:
    """A PostgreSQL database with a unique name (`<prefix>_<hex>`), dropped on exit."""
    import psycopg2

    def admin(sql: str) -> None:
        conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
