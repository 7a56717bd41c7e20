"""RabbitMQ for the tax worker: the shared topology (declared so that it
never conflicts with what the Rust services declared), publishing with
publisher confirms, and dead-lettering with a reason.

Names, all under AMQP_PREFIX (see shared/src/topology.rs):

    <prefix>checkout.commands      topic exchange, commands by step
    <prefix>checkout.replies       direct exchange, replies (key `reply`)
    <prefix>checkout.dead-letters  fanout exchange, and its queue
    <prefix>tax.commands           quorum queue bound to `tax.*`
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger("tax-worker")

WORKER_KINDS = ("inventory", "tax", "payment")
REPLY_ROUTING_KEY = "reply"
ERROR_HEADER = "x-error"
# As the Rust services declare their quorum queues.
DELIVERY_LIMIT = 5
QUORUM_GROUP_SIZE = 3


class Refused(Exception):
    """The broker did not take one message: nacked or unroutable."""


class Topology:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def command_exchange(self) -> str:
        return f"{self.prefix}checkout.commands"

    @property
    def reply_exchange(self) -> str:
        return f"{self.prefix}checkout.replies"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}checkout.dead-letters"

    def command_queue(self, kind: str) -> str:
        return f"{self.prefix}{kind}.commands"

    @property
    def reply_queue(self) -> str:
        return f"{self.prefix}orchestrator.replies"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}checkout.dead-letters"

    def exchanges(self) -> list[tuple[str, str]]:
        return [
            (self.command_exchange, "topic"),
            (self.reply_exchange, "direct"),
            (self.dead_letter_exchange, "fanout"),
        ]

    def queues(self) -> list[tuple[str, dict, str, str]]:
        """(queue, declaration arguments, exchange, binding key) of each."""
        with_dead_letters = quorum_arguments(self.dead_letter_exchange)
        queues = [
            (self.command_queue(kind), with_dead_letters, self.command_exchange, f"{kind}.*")
            for kind in WORKER_KINDS
        ]
        queues.append(
            (self.reply_queue, with_dead_letters, self.reply_exchange, REPLY_ROUTING_KEY)
        )
        queues.append(
            (self.dead_letter_queue, quorum_arguments(None), self.dead_letter_exchange, "")
        )
        return queues


def quorum_arguments(dead_letter_exchange: str | None) -> dict:
    args = {"x-queue-type": "quorum", "x-quorum-initial-group-size": QUORUM_GROUP_SIZE}
    if dead_letter_exchange is not None:
        args["x-dead-letter-exchange"] = dead_letter_exchange
        args["x-delivery-limit"] = DELIVERY_LIMIT
    return args


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
        """Declares the whole topology, as every Rust service does at start
        (so none depends on another having started first), but passively
        where it exists already: what another service declared (with its
        settings, whatever they are by now) is used as it is, never
        contested. Only what is missing is created, with the Rust services'
        exact arguments. Bindings are idempotent."""
        assert self.connection is not None
        channel = self.connection.channel()
        for name, kind in self.topology.exchanges():
            try:
                channel.exchange_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                if not _is_not_found(error):
                    raise
                channel = self.connection.channel()
                channel.exchange_declare(name, exchange_type=kind, durable=True)
                log.info("declared exchange %s", name)
        for queue, arguments, exchange, key in self.topology.queues():
            try:
                channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                if not _is_not_found(error):
                    raise
                channel = self.connection.channel()
                channel.queue_declare(queue, durable=True, arguments=arguments)
                log.info("declared queue %s", queue)
            channel.queue_bind(queue, exchange, routing_key=key)
        channel.close()

    def publish(self, exchange: str, routing_key: str, body: bytes, properties) -> None:
        """Publishes and waits for the broker's confirm. A message the broker
        returns (no queue bound) or nacks is `Refused`, never dropped."""
        assert self.publisher is not None
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
