"""The tax worker's own PostgreSQL database: its schema, its rates, its
inbox. Nothing here reads another service's tables.

The inbox has one row per command message handled (keyed by the command's
`message_id`), holding the reply recorded for it: a redelivered or
duplicated command is answered with that reply and nothing is done again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import ssl
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

import tax
from contract import Command

log = logging.getLogger("tax-worker")

# The schema, one migration per entry, applied in order under an advisory
# lock and recorded in `tax_worker_migrations`. Online changes only
# (expand, then contract), as for the Rust services.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "rates and inbox",
        """
        CREATE TABLE tax_rates (
            country  text NOT NULL,
            region   text NOT NULL DEFAULT '',
            category text NOT NULL,
            rate_bp  integer NOT NULL CHECK (rate_bp >= 0 AND rate_bp <= 10000),
            PRIMARY KEY (country, region, category)
        );
        CREATE TABLE inbox (
            message_id  uuid PRIMARY KEY,
            saga_id     uuid NOT NULL,
            step        text NOT NULL,
            attempt     integer NOT NULL,
            reply       jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX inbox_received_at ON inbox (received_at);
        """,
    ),
]

# pg_advisory_xact_lock key of the migrations: "taxpy" in ASCII.
MIGRATION_LOCK = 0x7461787079


class Unreachable(Exception):
    """No host of DATABASE_URL answered as a primary."""


class SchemaTooNew(Exception):
    """The database has migrations this build does not know."""


def is_permanent(error: Exception) -> bool:
    """Data the database will never accept (SQLSTATE classes 22 and 23):
    the message is dead-lettered. Anything else (the database is away, a
    serialization failure, a deadlock) is transient: hold and retry."""
    code = sqlstate(error)
    return code is not None and code[:2] in ("22", "23")


def sqlstate(error: Exception) -> str | None:
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        return error.args[0].get("C")
    return None


def describe(error: Exception) -> str:
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        fields = error.args[0]
        return f"database refused the data: {fields.get('M')} (SQLSTATE {fields.get('C')})"
    return str(error) or type(error).__name__


@dataclass
class Target:
    """What DATABASE_URL says: libpq's URL form, with one host or several
    (a primary and its standbys, comma-separated)."""

    hosts: list[tuple[str, int]]
    user: str
    password: str | None
    database: str
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    application_name: str = "tax-worker-python"
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> "Target":
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must start with postgres:// or postgresql://")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        hosts = []
        for entry in hostlist.split(","):
            host, port = entry, "5432"
            if entry.startswith("["):
                host, _, rest = entry[1:].partition("]")
                port = rest[1:] if rest.startswith(":") else port
            elif ":" in entry:
                host, port = entry.rsplit(":", 1)
            if not port.isdigit():
                raise ValueError(f"`{port}` is not a port")
            hosts.append((unquote(host) or "localhost", int(port)))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            hosts=hosts,
            user=unquote(user) or "postgres",
            password=unquote(password) if password else None,
            database=unquote(parts.path.lstrip("/")) or unquote(user) or "postgres",
            sslmode=query.get("sslmode", "prefer"),
            sslrootcert=query.get("sslrootcert"),
            application_name=query.get("application_name", "tax-worker-python"),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS as libpq's sslmode asks; `prefer` and below connect in clear."""
        if self.sslmode in ("disable", "allow", "prefer"):
            return None
        context = ssl.create_default_context(cafile=self.sslrootcert)
        if self.sslmode == "require" and self.sslrootcert is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.sslmode in ("require", "verify-ca"):
            context.check_hostname = False
        return context


class Database:
    """One connection to the primary, opened again after it is lost."""

    def __init__(self, url: str) -> None:
        self.target = Target.parse(url)
        self._conn: pg8000.native.Connection | None = None

    def connection(self) -> pg8000.native.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> pg8000.native.Connection:
        errors = []
        for host, port in self.target.hosts:
            try:
                conn = pg8000.native.Connection(
                    self.target.user,
                    host=host,
                    port=port,
                    database=self.target.database,
                    password=self.target.password,
                    ssl_context=self.target.ssl_context(),
                    application_name=self.target.application_name,
                    timeout=30,
                )
            except (InterfaceError, DatabaseError, OSError) as error:
                errors.append(f"{host}:{port}: {error}")
                continue
            if len(self.target.hosts) > 1 and conn.run("SELECT pg_is_in_recovery()")[0][0]:
                conn.close()
                errors.append(f"{host}:{port}: a standby")
                continue
            return conn
        raise Unreachable("; ".join(errors))

    def forget(self) -> None:
        """Drops the connection (after an error that may have broken it)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
            self._conn = None

    def transaction(self, work):
        """Runs `work(conn)` in one transaction and returns its result. On a
        permanent error the connection is kept; on any other it is dropped,
        and the next call connects again."""
        conn = self.connection()
        try:
            conn.run("START TRANSACTION")
            result = work(conn)
            conn.run("COMMIT")
            return result
        except Exception as error:
            if is_permanent(error):
                try:
                    conn.run("ROLLBACK")
                except Exception:  # noqa: BLE001
                    self.forget()
            else:
                self.forget()
            raise

    def close(self) -> None:
        self.forget()


# --- schema ------------------------------------------------------------------


def migrate(db: Database) -> int:
    """Applies the migrations this build knows and the database lacks; the
    schema version reached. Refuses a database migrated by a newer build."""

    def run(conn):
        conn.run("SELECT pg_advisory_xact_lock(:key)", key=MIGRATION_LOCK)
        conn.run(
            "CREATE TABLE IF NOT EXISTS tax_worker_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.run("SELECT version FROM tax_worker_migrations")}
        known = {version for version, _, _ in MIGRATIONS}
        if applied - known:
            raise SchemaTooNew(
                f"the database is at schema version {max(applied)}; "
                f"this build knows up to {max(known)}"
            )
        for version, description, sql in MIGRATIONS:
            if version in applied:
                continue
            conn.run(sql)
            conn.run(
                "INSERT INTO tax_worker_migrations (version, description) VALUES (:v, :d)",
                v=version,
                d=description,
            )
            log.info("migration %s applied: %s", version, description)
        return max(known)

    return db.transaction(run)


# --- rates -------------------------------------------------------------------


def rates_for(conn, destination: tax.Destination, categories: list[str]) -> dict[str, int]:
    """The rate of each of `categories` that has one at `destination`."""
    if not categories:
        return {}
    rows = conn.run(
        "SELECT region, category, rate_bp FROM tax_rates"
        " WHERE country = :country AND region IN (:region, '')"
        " AND category = ANY(CAST(:categories AS text[]))",
        country=destination.country,
        region=destination.region,
        categories=categories,
    )
    return tax.pick_rates((region, category, rate_bp) for region, category, rate_bp in rows)


# --- inbox -------------------------------------------------------------------


def recorded_reply(conn, message_id: uuid.UUID) -> dict | None:
    rows = conn.run("SELECT reply FROM inbox WHERE message_id = :id", id=message_id)
    return rows[0][0] if rows else None


def record_reply(conn, command: Command, reply: dict) -> dict:
    """Records `reply` as the answer to `command` and returns the reply to
    send: this one, or the one a concurrent delivery of the same message
    recorded first (the insert waits for it), so a message is only ever
    answered one way. The reply comes back as stored, so the first answer
    and every repeat of it are the same bytes."""
    rows = conn.run(
        "INSERT INTO inbox (message_id, saga_id, step, attempt, reply)"
        " VALUES (:message_id, :saga_id, :step, :attempt, CAST(:reply AS jsonb))"
        " ON CONFLICT (message_id) DO NOTHING RETURNING reply",
        message_id=command.message_id,
        saga_id=command.saga_id,
        step=command.step,
        attempt=command.attempt,
        reply=json.dumps(reply, ensure_ascii=False),
    )
    if rows:
        return rows[0][0]
    first = recorded_reply(conn, command.message_id)
    if first is None:
        raise RuntimeError(f"command {command.message_id} is in the inbox without a reply")
    return first


# Rows deleted per statement: short transactions, no long lock on the inbox.
PRUNE_BATCH = 1_000


def prune_inbox(db: Database, retention_days: int) -> int:
    """Deletes one batch of inbox rows older than the retention; how many."""

    def run(conn):
        conn.run(
            "DELETE FROM inbox WHERE message_id IN ("
            " SELECT message_id FROM inbox"
            " WHERE received_at < now() - make_interval(days => :days)"
            " LIMIT :batch FOR UPDATE SKIP LOCKED)",
            days=retention_days,
            batch=PRUNE_BATCH,
        )
        return conn.row_count

    return db.transaction(run)


# --- import ------------------------------------------------------------------

IMPORT_HEADER = ["country", "region", "category", "rate_bp"]
# Problems beyond this many are counted, not listed.
LISTED_PROBLEMS = 10
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+", re.ASCII)


class BadInput(Exception):
    """An operator's file that cannot be imported; the message names every
    problem with its line."""


def read_rates(source: str, data: bytes) -> list[tuple[str, str, str, int]]:
    """Checks every row of a rates CSV (`country,region,category,rate_bp`;
    an empty region is the country default) and returns the rates, or
    raises `BadInput` listing each problem with its line."""
    problems: list[str] = []

    def done() -> None:
        if problems:
            listed = "; ".join(problems[:LISTED_PROBLEMS])
            if len(problems) > LISTED_PROBLEMS:
                listed += f"; and {len(problems) - LISTED_PROBLEMS} more"
            raise BadInput(f"{source}: {listed} (nothing imported)")

    # Spreadsheets save "CSV UTF-8" with a byte-order mark.
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problems.append(f"line {line}, row: is not valid UTF-8")
        done()
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            problems.append(f"line 1, header: the file is empty; expected `{','.join(IMPORT_HEADER)}`")
        elif [h.strip() for h in header] != IMPORT_HEADER:
            found = ",".join(h.strip() for h in header)
            problems.append(f"line 1, header: expected `{','.join(IMPORT_HEADER)}`, found `{found}`")
        done()
        for record in reader:
            fields = [f.strip() for f in record]
            if all(f == "" for f in fields):
                continue
            if len(fields) != len(IMPORT_HEADER):
                problems.append(
                    f"line {reader.line_num}, row: has {len(fields)} fields, expected {len(IMPORT_HEADER)}"
                )
                continue
            rows.append((reader.line_num, fields))
    except csv.Error as error:
        problems.append(f"line {reader.line_num}, row: {error}")
    done()

    rates = []
    first_line: dict[tuple[str, str, str], int] = {}
    for line, (country_in, region_in, category, rate_in) in rows:
        destination = tax.Destination(country_in, region_in)
        valid = True
        if not (
            len(destination.country.encode()) == 2
            and destination.country.isascii()
            and destination.country.isalpha()
        ):
            problems.append(
                f"line {line}, country: `{country_in}` is not a two-letter country code (ISO 3166, e.g. US)"
            )
            valid = False
        if not all(c.isascii() and (c.isalnum() or c == "-") for c in destination.region):
            problems.append(
                f"line {line}, region: `{region_in}` is not a region code"
                " (letters, digits or `-`; empty for the country default)"
            )
            valid = False
        if category == "":
            problems.append(f"line {line}, category: is empty")
            valid = False
        rate_bp = 0
        if _WHOLE_NUMBER.fullmatch(rate_in):
            rate_bp = int(rate_in)
            if not 0 <= rate_bp <= tax.MAX_RATE_BP:
                problems.append(
                    f"line {line}, rate_bp: {rate_bp} is outside 0..={tax.MAX_RATE_BP} (0% to 100%)"
                )
                valid = False
        else:
            problems.append(f"line {line}, rate_bp: `{rate_in}` is not a whole number of basis points")
            valid = False
        if not valid:
            continue
        key = (destination.country, destination.region, category)
        if key in first_line:
            problems.append(
                f"line {line}, country/region/category: {destination} `{category}`"
                f" is already on line {first_line[key]}"
            )
            continue
        first_line[key] = line
        rates.append((destination.country, destination.region, category, rate_bp))
    done()
    return rates


def import_rates(db: Database, rates: list[tuple[str, str, str, int]]) -> tuple[int, int]:
    """Upserts `rates`, all or none: (new, updated)."""

    def run(conn):
        if not rates:
            return (0, 0)
        countries, regions, categories, rate_bps = (list(column) for column in zip(*rates))
        # `xmax = 0` only on a row this statement inserted rather than updated.
        inserted = conn.run(
            "INSERT INTO tax_rates (country, region, category, rate_bp)"
            " SELECT * FROM unnest(CAST(:countries AS text[]), CAST(:regions AS text[]),"
            " CAST(:categories AS text[]), CAST(:rate_bps AS int4[]))"
            " ON CONFLICT (country, region, category) DO UPDATE SET rate_bp = EXCLUDED.rate_bp"
            " RETURNING (xmax = 0)",
            countries=countries,
            regions=regions,
            categories=categories,
            rate_bps=rate_bps,
        )
        new = sum(1 for (was_new,) in inserted if was_new)
        return (new, len(inserted) - new)

    return db.transaction(run)
