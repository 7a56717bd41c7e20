"""The message contract as the tax worker reads and writes it.

Every message is a versioned JSON envelope:

    {"version": 1, "message_id": "<uuid>", "saga_id": "<uuid>",
     "step": "tax.calculate", "attempt": 1, "type": "tax.calculate",
     "sent_at": "<RFC 3339>", "payload": {...}}

A `tax.calculate` payload is

    {"ship_to": {"country": "US", "region": "CA"}, "currency": "USD",
     "lines": [{"sku": "...", "quantity": 2, "unit_price_cents": 2000,
                "tax_category": "clothing"}]}

and its reply is an envelope of type `tax.calculate.reply` whose payload is
one of

    {"outcome": "ok", "result": {"lines": [{"sku": "...", "rate_bp": 725,
                                             "tax_cents": 290}],
                                  "tax_cents": 290}}
    {"outcome": "rejected", "reason": "no_tax_rate", "detail": "..."}
    {"outcome": "transient", "error": "..."}

The reader is tolerant: fields it does not know are ignored. Only the
standard library is used here, so the contract can be tested on its own.
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

ENVELOPE_VERSION = 1

TAX_STEP = "tax.calculate"

# Every step's wire name (also its routing key and the envelope's `type`),
# and the worker kind that handles it.
STEPS = {
    "inventory.reserve": "inventory",
    "tax.calculate": "tax",
    "payment.charge": "payment",
    "inventory.release": "inventory",
    "payment.refund": "payment",
}

U32_MAX = 2**32 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class Poison(Exception):
    """A message that can never be handled: its text is the dead letter's
    `x-error` reason."""


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int
    tax_category: str

    @property
    def amount_cents(self) -> int:
        return self.unit_price_cents * self.quantity


@dataclass(frozen=True)
class CalculateTax:
    country: str
    region: str
    currency: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Command:
    message_id: uuid.UUID
    saga_id: uuid.UUID
    step: str
    attempt: int
    payload: CalculateTax

    @property
    def reply_type(self) -> str:
        return f"{self.step}.reply"


class _Invalid(Exception):
    """A field that does not have the contract's shape."""


def decode_command(body: bytes) -> Command:
    """The `tax.calculate` command in `body`, or `Poison` saying why not.

    The checks come in the Rust services' order, with their wording: UTF-8,
    JSON, the envelope's version (read first, so that a future envelope is
    reported as a version problem), the envelope's fields, its type, the
    worker kind, then the payload.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Poison("body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
        envelope = _object(value, "the envelope")
        version = _u32(_field(envelope, "version"), "version")
    except RecursionError:
        raise Poison("body is not a JSON envelope: nested too deeply") from None
    except (ValueError, _Invalid) as error:
        raise Poison(f"body is not a JSON envelope: {error}") from None
    if version != ENVELOPE_VERSION:
        raise Poison(
            f"unsupported envelope version {version} "
            f"(this build reads version {ENVELOPE_VERSION})"
        )
    try:
        message_id = _uuid(_field(envelope, "message_id"), "message_id")
        saga_id = _uuid(_field(envelope, "saga_id"), "saga_id")
        step = _string(_field(envelope, "step"), "step")
        if step not in STEPS:
            raise _Invalid(f"step: unknown variant `{step}`")
        attempt = _u32(_field(envelope, "attempt"), "attempt")
        message_type = _string(_field(envelope, "type"), "type")
        _timestamp(_field(envelope, "sent_at"), "sent_at")
        payload = _field(envelope, "payload")
    except _Invalid as error:
        raise Poison(f"body is not a JSON envelope: {error}") from None
    if message_type != step:
        raise Poison(f"unknown message type `{message_type}`")
    if STEPS[step] != "tax":
        raise Poison(f"command `{step}` is not for the tax worker")
    try:
        request = _calculate_tax(payload)
    except _Invalid as error:
        raise Poison(f"payload of `{message_type}` is invalid: {error}") from None
    return Command(message_id, saga_id, step, attempt, request)


def _calculate_tax(value: Any) -> CalculateTax:
    payload = _object(value, "payload")
    ship_to = _object(_field(payload, "ship_to"), "ship_to")
    country = _string(_field(ship_to, "country"), "ship_to.country")
    # An absent region is the empty one, as in the Rust contract.
    region = _string(ship_to.get("region", ""), "ship_to.region")
    currency = _string(_field(payload, "currency"), "currency")
    lines = _field(payload, "lines")
    if not isinstance(lines, list):
        raise _Invalid("lines: expected an array")
    return CalculateTax(
        country, region, currency, tuple(_line(n, v) for n, v in enumerate(lines))
    )


def _line(n: int, value: Any) -> Line:
    at = f"lines[{n}]"
    line = _object(value, at)
    return Line(
        sku=_string(_field(line, "sku", at), f"{at}.sku"),
        quantity=_u32(_field(line, "quantity", at), f"{at}.quantity"),
        unit_price_cents=_i64(
            _field(line, "unit_price_cents", at), f"{at}.unit_price_cents"
        ),
        tax_category=_string(_field(line, "tax_category", at), f"{at}.tax_category"),
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"`{name}` is not JSON")


def _field(obj: dict, name: str, within: str | None = None) -> Any:
    if name not in obj:
        where = f" in {within}" if within else ""
        raise _Invalid(f"missing field `{name}`{where}")
    return obj[name]


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(f"{what}: expected an object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{what}: expected a string")
    return value


def _integer(value: Any, what: str, low: int, high: int, kind: str) -> int:
    # JSON true/false are not numbers, though Python's bool is an int.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Invalid(f"{what}: expected {kind}, found {json.dumps(value)[:40]}")
    return value


def _u32(value: Any, what: str) -> int:
    return _integer(value, what, 0, U32_MAX, "an integer from 0 to 4294967295")


def _i64(value: Any, what: str) -> int:
    return _integer(value, what, I64_MIN, I64_MAX, "a 64-bit integer")


def _uuid(value: Any, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(_string(value, what))
    except ValueError:
        raise _Invalid(f"{what}: `{value}` is not a UUID") from None


def _timestamp(value: Any, what: str) -> datetime:
    text = _string(value, what)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"{what}: `{text}` is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise _Invalid(f"{what}: `{text}` has no UTC offset")
    return at


# --- replies -----------------------------------------------------------------


def ok(result: dict) -> dict:
    return {"outcome": "ok", "result": result}


def rejected(reason: str, detail: str) -> dict:
    return {"outcome": "rejected", "reason": reason, "detail": detail}


def transient(error: str) -> dict:
    return {"outcome": "transient", "error": error}


def reply(command: Command, outcome: dict) -> dict:
    """The reply envelope to `command`: same saga, step and attempt."""
    return {
        "version": ENVELOPE_VERSION,
        "message_id": str(uuid7()),
        "saga_id": str(command.saga_id),
        "step": command.step,
        "attempt": command.attempt,
        "type": command.reply_type,
        "sent_at": now_rfc3339(),
        "payload": outcome,
    }


def encode(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), as the Rust services use for
    message ids: 48 bits of Unix milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def traceparent_for_saga(saga_id: uuid.UUID) -> str:
    """A W3C traceparent whose trace id is the saga id, for a command that
    came without one: one checkout stays one trace."""
    span = int.from_bytes(os.urandom(8), "big") | 1
    return f"00-{saga_id.hex}-{span:016x}-01"


def printable(text: str) -> str:
    """`text` with every control character replaced by U+FFFD, as the Rust
    services store reasons: PostgreSQL text cannot hold a NUL."""
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in text)
