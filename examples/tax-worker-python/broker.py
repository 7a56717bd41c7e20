"""RabbitMQ for the tax worker: the shared topology (declared so that it
never conflicts with what the Rust services declared), the queue policies,
publishing with publisher confirms, and dead-lettering with a reason.

Names, all under AMQP_PREFIX (see shared/src/topology.rs):

    <prefix>checkout.commands      topic exchange, commands by step
    <prefix>checkout.replies       direct exchange, replies (key `reply`)
    <prefix>checkout.dead-letters  fanout exchange, and its queue
    <prefix>tax.commands           quorum queue bound to `tax.*`
    <prefix>checkout-work-queues   policy on the command and reply queues:
                                   dead-letter exchange, delivery limit 5
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger("tax-worker")

WORKER_KINDS = ("inventory", "tax", "payment")
REPLY_ROUTING_KEY = "reply"
ERROR_HEADER = "x-error"
# A message that keeps crashing its consumer is dead-lettered after this
# many deliveries (the work queues' policy).
DELIVERY_LIMIT = 5
# Where the management API answers when RABBITMQ_MANAGEMENT_URL is unset.
DEFAULT_MANAGEMENT_PORT = 15672


class Refused(Exception):
    """The broker did not take one message: nacked or unroutable."""


class Topology:
    """The names of one prefix's exchanges and queues, as the orchestrator
    declares them (saga-shared's topology)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.command_exchange = f"{prefix}checkout.commands"
        self.reply_exchange = f"{prefix}checkout.replies"
        self.dead_letter_exchange = f"{prefix}checkout.dead-letters"
        self.reply_queue = f"{prefix}orchestrator.replies"
        self.dead_letter_queue = f"{prefix}checkout.dead-letters"

    def command_queue(self, kind: str) -> str:
        return f"{self.prefix}{kind}.commands"

    def exchanges(self) -> list[tuple[str, str]]:
        return [
            (self.command_exchange, "topic"),
            (self.reply_exchange, "direct"),
            (self.dead_letter_exchange, "fanout"),
        ]

    def queues(self) -> list[tuple[str, str, str]]:
        """(queue, exchange, binding key) of each queue."""
        queues = [
            (self.command_queue(kind), self.command_exchange, f"{kind}.*")
            for kind in WORKER_KINDS
        ]
        queues.append((self.reply_queue, self.reply_exchange, REPLY_ROUTING_KEY))
        queues.append((self.dead_letter_queue, self.dead_letter_exchange, ""))
        return queues

    def policies(self) -> list[dict]:
        """The queue settings that may change between releases, as RabbitMQ
        policies (they apply to live queues, unlike declaration arguments):
        the work queues dead-letter to this prefix's dead-letter exchange,
        after DELIVERY_LIMIT deliveries of a message that keeps crashing."""
        work_queues = [self.command_queue(kind) for kind in WORKER_KINDS]
        work_queues.append(self.reply_queue)
        return [
            {
                "name": f"{self.prefix}checkout-work-queues",
                # A regex matching exactly these names.
                "pattern": "^(" + "|".join(_escape_regex(q) for q in work_queues) + ")$",
                "definition": {
                    "dead-letter-exchange": self.dead_letter_exchange,
                    "delivery-limit": DELIVERY_LIMIT,
                },
            }
        ]


def _escape_regex(text: str) -> str:
    """`text` as a regex that matches it alone: a prefix may hold `.`."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


class Management:
    """RabbitMQ's management HTTP API, where the queue policies are kept:
    RABBITMQ_MANAGEMENT_URL (http://user:pass@host:port), else the first
    AMQP node's host on port 15672 with its credentials; the virtual host
    is the AMQP URL's."""

    def __init__(self, amqp_url: str, management_url: str | None) -> None:
        amqp = urlsplit(amqp_url.split(",")[0].strip())
        self.vhost = unquote(amqp.path.lstrip("/")) or "/"
        base = urlsplit(management_url) if management_url else None
        if base is not None and base.username:
            user, password = unquote(base.username), unquote(base.password or "")
        else:
            user, password = unquote(amqp.username or ""), unquote(amqp.password or "")
        if not user:
            user, password = "guest", "guest"
        if base is None:
            self.base = f"http://{amqp.hostname}:{DEFAULT_MANAGEMENT_PORT}"
        else:
            host = base.hostname or ""
            port = f":{base.port}" if base.port else ""
            self.base = f"{base.scheme}://{host}{port}{base.path.rstrip('/')}"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.authorization = f"Basic {token}"

    def endpoint(self) -> str:
        """Where it is, without credentials, for messages."""
        return self.base

    def _call(self, method: str, name: str, body: dict | None = None):
        url = f"{self.base}/api/policies/{quote(self.vhost, safe='')}/{quote(name, safe='')}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", self.authorization)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as error:
            return error.code, None

    def ensure(self, topology: Topology) -> list[str]:
        """Creates each of `topology`'s policies that is missing, never
        overwriting one (during a roll an older and a newer build must not
        take turns rewriting them: `orchestrator topology` applies a
        change). What it did to each, to log."""
        done = []
        for policy in topology.policies():
            status, current = self._call("GET", policy["name"])
            if status == 200:
                same = (
                    current.get("pattern") == policy["pattern"]
                    and current.get("definition") == policy["definition"]
                    and current.get("apply-to") == "queues"
                )
                done.append(f"{policy['name']}: {'present' if same else 'differs; left as it is'}")
                continue
            if status != 404:
                raise OSError(f"the management API at {self.endpoint()} answered {status}")
            status, _ = self._call(
                "PUT",
                policy["name"],
                {
                    "pattern": policy["pattern"],
                    "definition": policy["definition"],
                    "apply-to": "queues",
                    "priority": 0,
                },
            )
            if status not in (200, 201, 204):
                raise OSError(
                    f"the management API at {self.endpoint()} refused policy {policy['name']}: {status}"
                )
            done.append(f"{policy['name']}: created")
        return done


def _is_not_found(error: pika.exceptions.ChannelClosedByBroker) -> bool:
    return error.reply_code == 404


class Broker:
    """One connection: a confirm-mode channel to publish on and a channel to
    consume from. Any AMQP error is the caller's cue to `close` and connect
    again (unacked deliveries come back, and the inbox answers them)."""

    def __init__(self, amqp_url: str, topology: Topology, ca_file: str | None, name: str):
        # AMQP_URL may list a cluster's nodes, comma-separated.
        self.urls = [u.strip() for u in amqp_url.split(",") if u.strip()]
        if not self.urls:
            raise ValueError("names no RabbitMQ node")
        self.topology = topology
        self.ca_file = ca_file
        self.name = name
        self.connection: pika.BlockingConnection | None = None
        self.publisher: BlockingChannel | None = None
        self.consumer: BlockingChannel | None = None
        # The RabbitMQ user of the live connection: stamped as `user_id`
        # on what it publishes (RabbitMQ checks it; the orchestrator trusts
        # a reply by it).
        self.user = "guest"

    def parameters(self, url: str) -> pika.URLParameters:
        """pika's parameters for one node; the Rust services' `cacertfile`
        query argument (or AMQP_CA_FILE) names the CA of an amqps:// node."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        cafile = query.pop("cacertfile", [self.ca_file])[-1]
        plain = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        parameters = pika.URLParameters(plain)
        if parts.scheme == "amqps":
            context = ssl.create_default_context(cafile=cafile)
            parameters.ssl_options = pika.SSLOptions(context, parts.hostname)
        parameters.client_properties = {"connection_name": f"{self.name} {self.topology.prefix}"}
        return parameters

    def connect(self) -> None:
        """Connects to a node (each once, from a random one), declares the
        topology, and opens the channels. Raises when no node answers."""
        start = random.randrange(len(self.urls))
        errors = []
        for url in self.urls[start:] + self.urls[:start]:
            try:
                self.connection = pika.BlockingConnection(self.parameters(url))
                self.user = unquote(urlsplit(url).username or "guest")
                break
            except pika.exceptions.AMQPError as error:
                errors.append(f"{urlsplit(url).hostname}: {error!r}")
        else:
            raise pika.exceptions.AMQPConnectionError("; ".join(errors))
        self.declare()
        self.publisher = self.connection.channel()
        self.publisher.confirm_delivery()
        self.consumer = self.connection.channel()

    def declare(self) -> None:
        """Declares whatever is missing, as every Rust service does at start
        (so none depends on another having started first): a queue that
        exists is checked passively and used as it is, never contested; a
        missing one is created as the Rust services create it. Exchanges
        carry no arguments and bindings are idempotent."""
        assert self.connection is not None
        channel = self.connection.channel()
        for name, kind in self.topology.exchanges():
            channel = self._unless_there(
                channel,
                f"exchange {name}",
                lambda c: c.exchange_declare(name, passive=True),
                lambda c: c.exchange_declare(name, exchange_type=kind, durable=True),
            )
        for queue, exchange, key in self.topology.queues():
            channel = self._unless_there(
                channel,
                f"queue {queue}",
                lambda c: c.queue_declare(queue, passive=True),
                # `x-queue-type` alone, the one setting that can be neither
                # a policy nor changed; the rest is the policy's.
                lambda c: c.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"}),
            )
            channel.queue_bind(queue, exchange, routing_key=key)
        channel.close()

    def _unless_there(self, channel, what: str, check, create):
        """Runs `check` (a passive declaration) on `channel`; if `what` is
        not found, which closes that channel, runs `create` on a new one.
        Returns the channel that is open now."""
        try:
            check(channel)
        except pika.exceptions.ChannelClosedByBroker as error:
            if not _is_not_found(error):
                raise
            channel = self.connection.channel()
            create(channel)
            log.info("declared %s", what)
        return channel

    def publish(self, exchange: str, routing_key: str, body: bytes, properties) -> None:
        """Publishes and waits for the broker's confirm. A message the broker
        returns (no queue bound) or nacks is `Refused`, never dropped."""
        assert self.publisher is not None
        properties.user_id = self.user
        try:
            self.publisher.basic_publish(
                exchange, routing_key, body, properties, mandatory=True
            )
        except pika.exceptions.UnroutableError:
            raise Refused(f"no queue is bound for {exchange}/{routing_key}") from None
        except pika.exceptions.NackError:
            raise Refused(f"RabbitMQ refused the message (nack) for {exchange}/{routing_key}") from None

    def dead_letter(self, method, properties, body: bytes, reason: str) -> None:
        """A copy of the delivery to the dead-letter exchange with `reason` in
        its `x-error` header (and where it came from), confirmed. The caller
        acks the original afterwards."""
        headers = dict(properties.headers or {})
        headers[ERROR_HEADER] = reason
        headers["x-original-exchange"] = method.exchange
        headers["x-original-routing-key"] = method.routing_key
        if properties.user_id:
            headers["x-original-user-id"] = properties.user_id
        properties.headers = headers
        self.publish(self.topology.dead_letter_exchange, "", body, properties)

    def sleep(self, seconds: float) -> None:
        """Waits while keeping the connection alive (heartbeats)."""
        if self.connection is not None and self.connection.is_open:
            self.connection.sleep(seconds)
        else:
            time.sleep(seconds)

    def close(self) -> None:
        connection, self.connection = self.connection, None
        self.publisher = self.consumer = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass
