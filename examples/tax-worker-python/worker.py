#!/usr/bin/env python3
"""The checkout saga's tax worker, in Python, from the message contract
alone: a drop-in for the Rust `tax` binary.

    worker.py              serve tax commands until SIGTERM or ctrl-c
    worker.py import FILE  load tax rates from CSV (country,region,category,rate_bp)

Environment, as for the Rust worker: DATABASE_URL (its own database),
AMQP_URL (one node, or a cluster's nodes comma-separated), AMQP_PREFIX,
AMQP_CA_FILE, RABBITMQ_MANAGEMENT_URL (where the queue policies are kept),
PREFETCH (default 32), INBOX_RETENTION_DAYS (default 7), LOG_LEVEL (default
INFO).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass

import pika
import pika.exceptions
from pg8000.exceptions import DatabaseError, InterfaceError

import contract
import store
import tax
from broker import REPLY_ROUTING_KEY, Broker, Management, Refused, Topology

log = logging.getLogger("tax-worker")

# Infrastructure that will be back: hold the message and try again.
TRANSIENT = (InterfaceError, DatabaseError, OSError, store.Unreachable)

# How often inbox rows past their retention are looked for.
PRUNE_EVERY_SECONDS = 10 * 60


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    database_url: str
    amqp_url: str
    amqp_prefix: str
    amqp_ca_file: str | None
    management_url: str | None
    prefetch: int
    inbox_retention_days: int


def required(name: str, hint: str) -> str:
    value = os.environ.get(name, "")
    if not value.strip():
        raise ConfigError(f"environment variable {name} is missing: {hint}")
    return value


def number(name: str, default: int, low: int, high: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"[0-9]+", value, re.ASCII) or not low <= int(value) <= high:
        raise ConfigError(
            f"environment variable {name} is invalid: `{value}`: must be from {low} to {high}"
        )
    return int(value)


def database_url() -> str:
    url = required(
        "DATABASE_URL",
        "set it to this service's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/tax",
    )
    try:
        store.Target.parse(url)
    except ValueError as error:
        raise ConfigError(f"environment variable DATABASE_URL is invalid: {error}") from None
    return url


def config_from_env() -> Config:
    db = database_url()
    amqp = required(
        "AMQP_URL", "set it to the RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f"
    )
    if not all(u.strip().startswith(("amqp://", "amqps://")) for u in amqp.split(",") if u.strip()):
        raise ConfigError(
            "environment variable AMQP_URL is invalid: must start with amqp:// or amqps://"
        )
    management = os.environ.get("RABBITMQ_MANAGEMENT_URL", "").strip() or None
    if management is not None and not management.startswith(("http://", "https://")):
        raise ConfigError(
            "environment variable RABBITMQ_MANAGEMENT_URL is invalid: must start with http:// or https://"
        )
    prefix = os.environ.get("AMQP_PREFIX", "")
    if len(prefix) > 64 or not re.fullmatch(r"[A-Za-z0-9._-]*", prefix):
        raise ConfigError(
            f"environment variable AMQP_PREFIX is invalid: `{prefix}`:"
            " use at most 64 letters, digits, `.`, `-` or `_`"
        )
    return Config(
        database_url=db,
        amqp_url=amqp,
        amqp_prefix=prefix,
        amqp_ca_file=os.environ.get("AMQP_CA_FILE") or None,
        management_url=management,
        prefetch=number("PREFETCH", 32, 1, 65_535),
        inbox_retention_days=number("INBOX_RETENTION_DAYS", 7, 1, 3_650),
    )


class Backoff:
    """Exponential backoff with full jitter: each delay is uniform in
    [0, min(cap, base * 2^n)], at least 10 ms."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    @classmethod
    def holding(cls) -> "Backoff":
        """Between tries of a message held while the database is away."""
        return cls(0.05, 5.0)

    @classmethod
    def reconnecting(cls) -> "Backoff":
        return cls(0.1, 5.0)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 20))
        self.attempt += 1
        return max(ceiling * random.random(), 0.01)


class Stop:
    """Set by SIGTERM or ctrl-c: stop taking work, finish what is in hand."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, _frame) -> None:
        if not self.requested:
            log.info("%s received: finishing the message in hand, then stopping",
                     signal.Signals(signum).name)
        self.requested = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))


# --- serving -----------------------------------------------------------------


def serve(config: Config) -> int:
    stop = Stop()
    db = store.Database(config.database_url)
    backoff = Backoff.reconnecting()
    while True:
        try:
            version = store.migrate(db)
            break
        except store.SchemaTooNew as error:
            log.error("refusing to start: %s", error)
            return 1
        except TRANSIENT as error:
            if stop.requested:
                return 0
            wait = backoff.next_delay()
            log.warning("database not reachable (%s); retrying in %.2fs", error, wait)
            stop.sleep(wait)
    log.info("database ready at schema version %s", version)

    topology = Topology(config.amqp_prefix)
    queue = topology.command_queue("tax")
    broker = Broker(config.amqp_url, topology, config.amqp_ca_file, "tax-worker-python")
    pruned_at = 0.0
    policies_checked = False
    backoff = Backoff.reconnecting()
    while not stop.requested:
        try:
            broker.connect()
            if not policies_checked:
                ensure_policies(config, topology)
                policies_checked = True
            broker.consumer.basic_qos(prefetch_count=config.prefetch)
            log.info("consuming %s (prefetch %s)", queue, config.prefetch)
            backoff = Backoff.reconnecting()
            for method, properties, body in broker.consumer.consume(queue, inactivity_timeout=1.0):
                if method is not None:
                    try:
                        handle(broker, db, method, properties, body, stop)
                    except pika.exceptions.AMQPError:
                        raise
                    except Exception:
                        # A bug: requeued, and the queue's delivery limit
                        # dead-letters a message that keeps crashing it.
                        log.exception("a message crashed the worker; requeued")
                        broker.consumer.basic_nack(method.delivery_tag, requeue=True)
                if stop.requested:
                    break
                if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                    prune(db, config.inbox_retention_days, stop)
                    pruned_at = time.monotonic()
            else:
                log.warning("the broker cancelled the consumer (a queue leader moved?); consuming again")
        except pika.exceptions.AMQPError as error:
            broker.close()
            if stop.requested:
                break
            wait = backoff.next_delay()
            log.warning("RabbitMQ not reachable or connection lost (%r); retrying in %.2fs", error, wait)
            stop.sleep(wait)
    # What is unacked now goes back to the queue for another copy.
    broker.close()
    db.close()
    log.info("stopped")
    return 0


def ensure_policies(config: Config, topology: Topology) -> None:
    """At start, as every Rust service does: creates the queue policies that
    are missing (never overwriting one). A broker without the management
    API still runs the worker, with one warning saying what is missing."""
    try:
        for done in Management(config.amqp_url, config.management_url).ensure(topology):
            log.info("queue policy %s", done)
    except (OSError, ValueError) as error:
        log.warning(
            "queue policies not checked (%s): until they exist, a message that keeps crashing"
            " its consumer is not dead-lettered. Enable RabbitMQ's management plugin (or set"
            " RABBITMQ_MANAGEMENT_URL) and run `orchestrator topology`",
            error,
        )


def handle(broker: Broker, db: store.Database, method, properties, body: bytes, stop: Stop) -> None:
    """One delivery: decode it (or dead-letter it), answer it from the inbox
    or by the tax rule in one transaction, publish the reply with a confirm,
    and only then ack."""
    tag = method.delivery_tag
    try:
        command = contract.decode_command(body)
    except contract.Poison as poison:
        dead_letter(broker, method, properties, body, str(poison))
        return

    backoff = Backoff.holding()
    while True:
        try:
            reply, duplicate = answer(db, command)
            break
        except TRANSIENT as error:
            if store.is_permanent(error):
                reason = store.describe(error)
                log.error("message can never be handled (%s); dead-lettering it", reason)
                dead_letter(broker, method, properties, body, reason)
                return
            if stop.requested:
                # Another copy takes it; its inbox row, if any, answers.
                broker.consumer.basic_nack(tag, requeue=True)
                return
            wait = backoff.next_delay()
            # Held, not nacked: a nack would count towards the queue's
            # delivery limit and dead-letter good commands in an outage.
            log.warning("command %s not handled (%s); holding it, retrying in %.2fs",
                        command.message_id, error, wait)
            broker.sleep(wait)

    outcome = reply["payload"]
    log.info(
        "%s saga_id=%s step=%s attempt=%s message_id=%s outcome=%s%s",
        "duplicate command: sending the recorded reply" if duplicate else "command handled",
        command.saga_id, command.step, command.attempt, command.message_id,
        outcome.get("outcome"),
        f" reason={outcome['reason']}" if outcome.get("outcome") == "rejected" else "",
    )
    reply_properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=reply["message_id"],
        correlation_id=str(command.saga_id),
        type=command.reply_type,
        timestamp=int(time.time()),
        headers={"traceparent": traceparent(properties, command)},
    )
    try:
        broker.publish(
            broker.topology.reply_exchange, REPLY_ROUTING_KEY, contract.encode(reply), reply_properties
        )
    except Refused as error:
        # Its redelivery is answered from the inbox.
        log.error("reply not confirmed (%s); requeueing the command", error)
        broker.consumer.basic_nack(tag, requeue=True)
        return
    broker.consumer.basic_ack(tag)


def answer(db: store.Database, command: contract.Command) -> tuple[dict, bool]:
    """The reply to `command` and whether it was recorded before: the inbox
    lookup, the rates and the recorded reply in one transaction."""

    def work(conn):
        recorded = store.recorded_reply(conn, command.message_id)
        if recorded is not None:
            return recorded, True
        request = command.payload
        rates = {}
        if tax.invalid_amounts(request.lines) is None:
            destination = tax.Destination(request.country, request.region)
            rates = store.rates_for(conn, destination, tax.categories(request))
        reply = contract.reply(command, tax.outcome(request, rates))
        return store.record_reply(conn, command, reply), False

    return db.transaction(work)


def traceparent(properties, command: contract.Command) -> str:
    """The command's own `traceparent`, passed on (this worker exports no
    spans), else one whose trace id is the saga id."""
    value = (properties.headers or {}).get("traceparent")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else contract.traceparent_for_saga(command.saga_id)


def dead_letter(broker: Broker, method, properties, body: bytes, reason: str) -> None:
    """Takes a message that can never be handled off the queue: a copy goes
    to the dead-letter exchange with the reason, then the original is acked,
    so the queue behind it keeps flowing."""
    reason = contract.printable(reason)
    log.warning("dead-lettering message: %s", reason)
    try:
        broker.dead_letter(method, properties, body, reason)
    except Refused as error:
        # The queue's own dead-letter exchange keeps it, without our reason.
        log.error("could not dead-letter with a reason (%s); rejecting", error)
        broker.consumer.basic_nack(method.delivery_tag, requeue=False)
        return
    broker.consumer.basic_ack(method.delivery_tag)


def prune(db: store.Database, days: int, stop: Stop) -> None:
    total = 0
    try:
        while not stop.requested:
            deleted = store.prune_inbox(db, days)
            total += deleted
            if deleted < store.PRUNE_BATCH:
                break
    except TRANSIENT as error:
        log.warning("inbox pruning failed (%s); trying again later", error)
    if total:
        log.info("%s inbox rows past their retention pruned", total)


# --- operator commands -------------------------------------------------------

# How long a one-shot command waits for its database.
COMMAND_CONNECT_PATIENCE_SECONDS = 15


def import_rates(path: str) -> int:
    url = database_url()
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        print(f"error: {path}: cannot open: {error.strerror}", file=sys.stderr)
        return 2
    try:
        rates = store.read_rates(path, data)
    except store.BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    db = store.Database(url)
    deadline = time.monotonic() + COMMAND_CONNECT_PATIENCE_SECONDS
    backoff = Backoff.reconnecting()
    while True:
        try:
            store.migrate(db)
            new, updated = store.import_rates(db, rates)
            break
        except store.SchemaTooNew as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except TRANSIENT as error:
            if store.is_permanent(error) or time.monotonic() > deadline:
                print(f"error: {store.describe(error)}", file=sys.stderr)
                return 1
            time.sleep(backoff.next_delay())
        finally:
            db.close()
    print(f"imported {new + updated} tax rates ({new} new, {updated} updated)")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="worker.py",
        description="Tax worker of the checkout saga: tax per line from the ship-to "
        "country and region and the line's tax category. Rates are in basis points; "
        "each line's tax is rounded half up to a whole minor unit, and the total is "
        "their sum. With no subcommand it serves: it consumes tax commands from "
        "RabbitMQ until SIGTERM or ctrl-c. Environment: DATABASE_URL, AMQP_URL, "
        "AMQP_PREFIX, AMQP_CA_FILE, RABBITMQ_MANAGEMENT_URL, PREFETCH, "
        "INBOX_RETENTION_DAYS, LOG_LEVEL. "
        "The import subcommand needs only DATABASE_URL.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve tax commands until SIGTERM or ctrl-c (the default)")
    load = commands.add_parser(
        "import",
        help="load tax rates from CSV: country,region,category,rate_bp",
        description="Load tax rates from a CSV file with the header "
        "country,region,category,rate_bp. country is a two-letter code; an empty "
        "region is the country's default for the category; rate_bp is in basis "
        "points, 0 to 10000 (825 = 8.25%%). Every row is checked first; if any is "
        "bad, nothing is imported and each problem is reported with its line (exit "
        "code 2). Existing rates take the file's value.",
    )
    load.add_argument("file", help="the CSV file to load")
    args = parser.parse_args(argv)

    serving = args.command in (None, "serve")
    level = os.environ.get("LOG_LEVEL", "").strip().upper() or ("INFO" if serving else "WARNING")
    if level not in logging.getLevelNamesMapping():
        print(f"error: environment variable LOG_LEVEL is invalid: `{level}`", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s tax-worker-python: %(message)s",
        stream=sys.stderr,
    )
    # pika's own chatter, at warning and above only.
    logging.getLogger("pika").setLevel(logging.WARNING)
    # A passive declaration of what is missing closes its channel: expected.
    logging.getLogger("pika.channel").setLevel(logging.ERROR)
    try:
        if serving:
            return serve(config_from_env())
        return import_rates(args.file)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
