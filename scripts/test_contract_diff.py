#!/usr/bin/env python3
"""Tests of contract_diff.py: each kind of breaking change is caught, and
the changes a compatible release makes pass. Run by scripts/contract-check:

    python3 -m unittest discover -s scripts -p 'test_contract_diff.py'
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import contract_diff  # noqa: E402

REPO = os.path.dirname(HERE)

CHARGE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "ChargePayment",
    "type": "object",
    "properties": {
        "amount_cents": {"type": "integer", "format": "int64"},
        "price": {"type": "number"},
        "currency": {"type": "string"},
        "note": {"type": ["string", "null"]},
        "method": {"type": "string", "enum": ["card", "wallet"]},
        "lines": {"type": "array", "items": {"$ref": "#/definitions/Line"}},
    },
    "required": ["amount_cents", "currency", "lines"],
    "definitions": {
        "Line": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "maxLength": 64},
                "quantity": {"type": "integer", "format": "uint32", "minimum": 0},
            },
            "required": ["sku", "quantity"],
        }
    },
}


def variant(outcome, properties, required):
    return {
        "type": "object",
        "properties": {"outcome": {"type": "string", "const": outcome}, **properties},
        "required": ["outcome", *required],
    }


CHARGE_REPLY = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "oneOf": [
        variant("ok", {"result": {"$ref": "#/definitions/Charged"}}, ["result"]),
        variant("rejected", {"reason": {"type": "string"}, "detail": {"type": "string"}}, ["reason", "detail"]),
        variant("transient", {"error": {"type": "string"}}, ["error"]),
    ],
    "definitions": {
        "Charged": {
            "type": "object",
            "properties": {"payment_id": {"type": "string", "format": "uuid"}},
            "required": ["payment_id"],
        }
    },
}

ASYNCAPI = {
    "asyncapi": "3.0.0",
    "channels": {
        "paymentCharge": {
            "address": "payment.charge",
            "messages": {"paymentCharge": {"$ref": "#/components/messages/paymentCharge"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{prefix}checkout.commands", "type": "topic"}}},
        },
        "paymentCommands": {
            "address": "{prefix}payment.commands",
            "messages": {"paymentCharge": {"$ref": "#/components/messages/paymentCharge"}},
            "bindings": {"amqp": {"is": "queue", "queue": {"name": "{prefix}payment.commands", "durable": True}}},
            "x-queue-arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5},
            "x-bound-to": [{"exchange": "{prefix}checkout.commands", "routingKey": "payment.*"}],
        },
    },
    "operations": {
        "sendPaymentCharge": {
            "action": "send",
            "channel": {"$ref": "#/channels/paymentCharge"},
            "messages": [{"$ref": "#/channels/paymentCharge/messages/paymentCharge"}],
        }
    },
    "components": {
        "messages": {
            "paymentCharge": {
                "name": "payment.charge",
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/headers"},
                "payload": {"allOf": [{"$ref": "./schemas/envelope.json"}, {"properties": {"payload": {"$ref": "./schemas/payment.charge.json"}}}]},
                "bindings": {"amqp": {"messageType": "payment.charge"}},
            }
        },
        "schemas": {
            "headers": {"type": "object", "properties": {"traceparent": {"type": "string"}}},
        },
    },
}


# One edit of the contract that breaks it: what it is, where (a path of
# keys), the value put there (REMOVED: the key taken out), and the words of
# each break it must be reported as.
REMOVED = object()
BREAKING_EDITS = [
    ("a field removed", ("payment.charge", "properties", "note"), REMOVED,
     ["payment.charge: note: field removed"]),
    ("a field removed from a shared definition names its path",
     ("payment.charge", "definitions", "Line", "properties", "sku"), REMOVED,
     ["payment.charge: lines[].sku: field removed"]),
    ("a type removed from a union", ("payment.charge", "properties", "note", "type"), "string",
     ["note: narrowed: type null"]),
    ("an enum value removed", ("payment.charge", "properties", "method", "enum"), ["card"],
     ["method: narrowed: value \"wallet\" removed"]),
    ("integer where number was", ("payment.charge", "properties", "price", "type"), "integer",
     ["price: narrowed: type number"]),
    ("number where integer was is a widening old readers refuse",
     ("payment.charge", "properties", "amount_cents"), {"type": "number"},
     ["amount_cents: widened: type number"],
     ["amount_cents: format changed from int64 to None"]),
    ("a bound tightened",
     ("payment.charge", "definitions", "Line", "properties", "sku", "maxLength"), 16,
     ["lines[].sku: narrowed: maxLength 64 -> 16"]),
    ("a change inside a variant",
     ("payment.charge.reply", "definitions", "Charged", "properties", "payment_id"), REMOVED,
     ['(outcome="ok").result.payment_id: field removed']),
    ("unknown fields refused where they were ignored",
     ("payment.charge", "additionalProperties"), False,
     ["payment.charge: (root): unknown fields now refused"]),
]


class ContractDiffTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="contract-diff-test-")
        self.addCleanup(shutil.rmtree, self.tmp)

    def write(self, name, schemas, asyncapi=None):
        # A directory of its own each time: one test may compare several.
        directory = tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)
        os.makedirs(os.path.join(directory, "schemas"))
        for message, schema in schemas.items():
            with open(os.path.join(directory, "schemas", f"{message}.json"), "w") as f:
                json.dump(schema, f)
        if asyncapi is not None:
            with open(os.path.join(directory, "asyncapi.json"), "w") as f:
                json.dump(asyncapi, f)
        return directory

    def diff(self, change, old=None, asyncapi=False):
        """The breaking changes `change` makes to a copy of the contract `old`."""
        old = old or {"payment.charge": CHARGE, "payment.charge.reply": CHARGE_REPLY}
        new = copy.deepcopy(old)
        old_api = copy.deepcopy(ASYNCAPI) if asyncapi else None
        new_api = copy.deepcopy(ASYNCAPI) if asyncapi else None
        change(new_api if asyncapi else new)
        return contract_diff.compare(
            self.write("old", old, old_api), self.write("new", new, new_api)
        )

    def assertBreaks(self, breaks, *expected):
        """Exactly one reported line per expected change, holding all its words."""
        self.assertEqual(len(breaks), len(expected), breaks)
        unmatched = list(breaks)
        for words in expected:
            line = next((b for b in unmatched if all(w in b for w in words)), None)
            self.assertIsNotNone(line, f"{words} not among {unmatched}")
            unmatched.remove(line)

    # Breaking changes.

    def test_each_breaking_edit(self):
        for what, path, value, *expected in BREAKING_EDITS:

            def change(c, path=path, value=value):
                *parents, key = path
                for name in parents:
                    c = c[name]
                if value is REMOVED:
                    del c[key]
                else:
                    c[key] = copy.deepcopy(value)

            with self.subTest(what):
                self.assertBreaks(self.diff(change), *expected)

    def test_a_new_required_field(self):
        def change(c):
            c["payment.charge"]["properties"]["customer_id"] = {"type": "string"}
            c["payment.charge"]["required"].append("customer_id")

        self.assertBreaks(self.diff(change), ["customer_id: new required field"])

    def test_a_field_that_became_required(self):
        def change(c):
            c["payment.charge"]["required"].append("note")

        self.assertBreaks(self.diff(change), ["note: field became required"])

    def test_a_schema_removed_or_renamed(self):
        def change(c):
            c["payment.capture"] = c.pop("payment.charge")

        self.assertBreaks(self.diff(change), ["payment.charge: (root): schema removed"])

    def test_a_tagged_variant_removed(self):
        def change(c):
            c["payment.charge.reply"]["oneOf"].pop()

        self.assertBreaks(
            self.diff(change), ["payment.charge.reply", 'variant outcome="transient" removed']
        )

    def test_a_field_added_where_old_readers_refuse_unknown_fields(self):
        closed = {"payment.charge": dict(copy.deepcopy(CHARGE), additionalProperties=False)}

        def change(c):
            c["payment.charge"]["properties"]["coupon"] = {"type": "string"}

        self.assertBreaks(
            self.diff(change, old=closed), ["coupon: field added where old readers refuse"]
        )

    # Compatible changes.

    def test_the_same_contract(self):
        self.assertEqual(self.diff(lambda c: None, asyncapi=True), [])

    def test_an_optional_field_added(self):
        def change(c):
            c["payment.charge"]["properties"]["coupon"] = {"type": "string"}
            c["payment.charge"]["definitions"]["Line"]["properties"]["gift"] = {"type": "boolean"}

        self.assertEqual(self.diff(change), [])

    def test_a_new_message(self):
        def change(c):
            c["payment.capture"] = copy.deepcopy(CHARGE)

        self.assertEqual(self.diff(change), [])

    def test_an_enum_value_or_a_tagged_variant_added(self):
        def change(c):
            c["payment.charge"]["properties"]["method"]["enum"].append("voucher")
            c["payment.charge.reply"]["oneOf"].append(variant("deferred", {}, []))

        self.assertEqual(self.diff(change), [])

    def test_unknown_fields_ignored_where_they_were_refused(self):
        closed = {"payment.charge": dict(copy.deepcopy(CHARGE), additionalProperties=False)}

        def change(c):
            del c["payment.charge"]["additionalProperties"]

        self.assertEqual(self.diff(change, old=closed), [])

    def test_a_bound_relaxed_a_requirement_dropped_and_the_docs_rewritten(self):
        def change(c):
            charge = c["payment.charge"]
            charge["definitions"]["Line"]["properties"]["sku"]["maxLength"] = 128
            charge["required"].remove("lines")
            charge["title"] = "Charge"
            charge["properties"]["currency"]["description"] = "ISO 4217"

        self.assertEqual(self.diff(change), [])

    def test_recursive_definitions_end(self):
        tree = {
            "$ref": "#/definitions/Node",
            "definitions": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                    },
                }
            },
        }

        def change(c):
            del c["tree"]["definitions"]["Node"]["properties"]["name"]

        self.assertBreaks(self.diff(change, old={"tree": tree}), ["tree: name: field removed"])

    # The AsyncAPI document.

    def test_a_channel_removed_or_moved(self):
        def change(api):
            del api["channels"]["paymentCommands"]
            api["channels"]["paymentCharge"]["address"] = "payment.capture"

        self.assertBreaks(
            self.diff(change, asyncapi=True),
            ["channels.paymentCommands: channel removed"],
            ['channels.paymentCharge: address "payment.charge" -> "payment.capture"'],
        )

    def test_an_exchange_renamed_or_a_queue_argument_changed(self):
        def change(api):
            channels = api["channels"]
            channels["paymentCharge"]["bindings"]["amqp"]["exchange"]["name"] = "{prefix}commands"
            channels["paymentCommands"]["x-queue-arguments"]["x-delivery-limit"] = 10

        self.assertBreaks(
            self.diff(change, asyncapi=True),
            ["channels.paymentCharge.exchange.name"],
            ["channels.paymentCommands.x-delivery-limit: queue argument 5 -> 10"],
        )

    def test_queue_arguments_may_change_once_existing_queues_are_used_as_they_are(self):
        def change(api):
            queue = api["channels"]["paymentCommands"]
            queue["x-declaration"] = "an existing queue is used as it is (a passive check)"
            queue["x-queue-arguments"] = {"x-queue-type": "quorum"}
            queue["x-queue-policy"] = {"delivery-limit": 5}

        self.assertEqual(self.diff(change, asyncapi=True), [])

    def test_a_message_or_operation_removed_or_renamed(self):
        def change(api):
            del api["operations"]["sendPaymentCharge"]
            api["components"]["messages"]["paymentCharge"]["name"] = "payment.capture"

        self.assertBreaks(
            self.diff(change, asyncapi=True),
            ["operations.sendPaymentCharge: operation removed"],
            ['message payment.charge: name: "payment.charge" -> "payment.capture"'],
        )

    def test_a_header_or_payload_reference_changed(self):
        def change(api):
            message = api["components"]["messages"]["paymentCharge"]
            message["payload"]["allOf"][1]["properties"]["payload"]["$ref"] = "./schemas/x.json"
            api["components"]["schemas"]["headers"]["properties"]["traceparent"]["type"] = "integer"

        breaks = self.diff(change, asyncapi=True)
        self.assertBreaks(
            breaks,
            ["payload&1.payload: refers to ./schemas/x.json"],
            ["headers.traceparent: narrowed: type string"],
            ["headers.traceparent: widened: type integer"],
        )

    # The real contract, and the command line.

    def test_the_command_line_fails_on_a_break_in_the_real_contract(self):
        current = os.path.join(REPO, "contract")
        broken = os.path.join(self.tmp, "broken")
        shutil.copytree(current, broken, ignore=shutil.ignore_patterns("releases"))
        path = os.path.join(broken, "schemas", "payment.charge.json")
        with open(path) as f:
            schema = json.load(f)
        del schema["properties"]["currency"]
        with open(path, "w") as f:
            json.dump(schema, f)

        script = os.path.join(HERE, "contract_diff.py")
        run = lambda old, new: subprocess.run(  # noqa: E731
            [sys.executable, script, old, new], capture_output=True, text=True
        )
        failed = run(current, broken)
        self.assertEqual(failed.returncode, 1, failed.stderr)
        self.assertIn("BREAKING payment.charge: currency: field removed", failed.stdout)
        passed = run(current, current)
        self.assertEqual(passed.returncode, 0, passed.stdout + passed.stderr)
        missing = run(current, os.path.join(self.tmp, "nowhere"))
        self.assertEqual(missing.returncode, 2)


if __name__ == "__main__":
    unittest.main()
