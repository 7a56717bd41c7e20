"""Unit tests of the contract, the tax rule and the rates import, with no
services: `python -m unittest` in this directory (inside the venv)."""

import json
import unittest
import uuid

import contract
import store
import tax


def command_body(**changes) -> bytes:
    envelope = {
        "version": 1,
        "message_id": str(uuid.uuid4()),
        "saga_id": str(uuid.uuid4()),
        "step": "tax.calculate",
        "attempt": 1,
        "type": "tax.calculate",
        "sent_at": "2025-01-02T03:04:05.123456789Z",
        "payload": {
            "ship_to": {"country": "us", "region": " ca "},
            "currency": "USD",
            "lines": [
                {"sku": "TSHIRT", "quantity": 2, "unit_price_cents": 2000, "tax_category": "clothing"},
                {"sku": "MUG", "quantity": 1, "unit_price_cents": 999, "tax_category": "general"},
            ],
        },
    }
    envelope.update(changes)
    return json.dumps(envelope).encode()


class Rounding(unittest.TestCase):
    def test_half_up_per_line(self):
        # The Rust worker's own cases (protocol/src/money.rs).
        self.assertEqual(tax.apply_basis_points(999, 825), 82)  # 82.4175
        self.assertEqual(tax.apply_basis_points(1_000, 725), 73)  # 72.5
        self.assertEqual(tax.apply_basis_points(1_000, 724), 72)  # 72.4
        self.assertEqual(tax.apply_basis_points(0, 2_000), 0)
        self.assertEqual(tax.apply_basis_points(12_345, 0), 0)
        self.assertEqual(tax.apply_basis_points(-1_000, 725), -73)
        self.assertEqual(tax.apply_basis_points(contract.I64_MAX // 2, 10_000), contract.I64_MAX // 2)

    def test_only_integers(self):
        self.assertIsInstance(tax.apply_basis_points(333, 333), int)


class Decoding(unittest.TestCase):
    def test_a_command_decodes_and_unknown_fields_are_ignored(self):
        body = json.loads(command_body(future_field={"x": 1}))
        body["payload"]["lines"][0]["colour"] = "red"
        body["payload"]["ship_to"]["postcode"] = "94000"
        command = contract.decode_command(json.dumps(body).encode())
        self.assertEqual(command.step, "tax.calculate")
        self.assertEqual(command.payload.lines[0].amount_cents, 4000)
        self.assertEqual(command.reply_type, "tax.calculate.reply")

    def test_region_may_be_absent(self):
        body = json.loads(command_body())
        del body["payload"]["ship_to"]["region"]
        self.assertEqual(contract.decode_command(json.dumps(body).encode()).payload.region, "")

    def test_poison_says_why_in_the_rust_services_words(self):
        cases = [
            (b"\xff\xfe", "body is not UTF-8"),
            (b"{not json", "body is not a JSON envelope"),
            (b"[1]", "body is not a JSON envelope"),
            (command_body(version=9), "unsupported envelope version 9 (this build reads version 1)"),
            (command_body(type="tax.explode"), "unknown message type `tax.explode`"),
            (command_body(step="tax.explode", type="tax.explode"), "body is not a JSON envelope"),
            (
                command_body(step="payment.refund", type="payment.refund", payload={}),
                "command `payment.refund` is not for the tax worker",
            ),
            (command_body(payload={"currency": "USD"}), "payload of `tax.calculate` is invalid"),
            (command_body(attempt=-1), "body is not a JSON envelope"),
            (command_body(message_id="nope"), "body is not a JSON envelope"),
            (command_body(sent_at="yesterday"), "body is not a JSON envelope"),
            (b"[" * 100_000 + b"]" * 100_000, "body is not a JSON envelope"),
        ]
        for body, says in cases:
            with self.subTest(says=says):
                with self.assertRaises(contract.Poison) as caught:
                    contract.decode_command(body)
                self.assertIn(says, str(caught.exception))

    def test_numbers_must_be_integers(self):
        for quantity in (1.5, True, "2", -1, 2**32):
            body = json.loads(command_body())
            body["payload"]["lines"][0]["quantity"] = quantity
            with self.subTest(quantity=quantity), self.assertRaises(contract.Poison):
                contract.decode_command(json.dumps(body).encode())

    def test_replies_are_envelopes(self):
        command = contract.decode_command(command_body())
        reply = contract.reply(command, contract.rejected("no_tax_rate", "x"))
        self.assertEqual(reply["type"], "tax.calculate.reply")
        self.assertEqual(reply["saga_id"], str(command.saga_id))
        self.assertEqual(uuid.UUID(reply["message_id"]).version, 7)
        self.assertTrue(reply["sent_at"].endswith("Z"))

    def test_control_characters_are_replaced(self):
        self.assertEqual(contract.printable("a\0b\x07c\nd"), "a\ufffdb\ufffdc\ufffdd")


class Rule(unittest.TestCase):
    def request(self, region="CA"):
        body = json.loads(command_body())
        body["payload"]["ship_to"]["region"] = region
        return contract.decode_command(json.dumps(body).encode()).payload

    def test_tax_per_line_summed(self):
        result = tax.outcome(self.request(), {"clothing": 725, "general": 825})
        self.assertEqual(result["outcome"], "ok")
        self.assertEqual(
            result["result"]["lines"],
            [
                {"sku": "TSHIRT", "rate_bp": 725, "tax_cents": 290},
                {"sku": "MUG", "rate_bp": 825, "tax_cents": 82},
            ],
        )
        self.assertEqual(result["result"]["tax_cents"], 372)

    def test_region_rate_wins_over_country_default(self):
        rows = [("", "general", 600), ("CA", "general", 825), ("", "books", 300)]
        self.assertEqual(tax.pick_rates(rows), {"general": 825, "books": 300})
        self.assertEqual(tax.pick_rates(reversed(rows)), {"general": 825, "books": 300})

    def test_no_rate_is_rejected_naming_what_is_missing(self):
        result = tax.outcome(self.request(), {"general": 825})
        self.assertEqual(
            result,
            contract.rejected(
                "no_tax_rate", "no tax rate for category `clothing` in US-CA (nor a default for US)"
            ),
        )
        result = tax.outcome(self.request(region=""), {})
        self.assertEqual(
            result["detail"], "no tax rate for category `clothing`, `general` in US"
        )

    def test_impossible_amounts_are_rejected(self):
        line = contract.Line("X", 1, -5, "general")
        self.assertEqual(tax.invalid_amounts([line]), "X: unit price -5 is negative")
        big = contract.Line("Y", 2**32 - 1, contract.I64_MAX // 2, "general")
        self.assertEqual(tax.invalid_amounts([big]), "Y: the amounts are too large")


class Import(unittest.TestCase):
    def test_rates_are_read_and_normalized(self):
        data = "\ufeffcountry,region,category,rate_bp\nus, ca ,clothing,725\nUS,,books,300\n\n".encode()
        self.assertEqual(
            store.read_rates("r.csv", data),
            [("US", "CA", "clothing", 725), ("US", "", "books", 300)],
        )

    def test_every_bad_row_is_named_and_nothing_imported(self):
        data = b"country,region,category,rate_bp\nUSA,,x,1\nUS,C A,x,2\nUS,,,3\nUS,,x,10001\nUS,,y,1.5\nUS,,z,1\nus,,z,2\nUS\n"
        with self.assertRaises(store.BadInput) as caught:
            store.read_rates("r.csv", data)
        text = str(caught.exception)
        for says in [
            "line 9, row: has 1 fields, expected 4",
        ]:
            self.assertIn(says, text)
        data = data.rsplit(b"\n", 2)[0] + b"\n"
        with self.assertRaises(store.BadInput) as caught:
            store.read_rates("r.csv", data)
        text = str(caught.exception)
        for says in [
            "line 2, country: `USA` is not a two-letter country code",
            "line 3, region: `C A` is not a region code",
            "line 4, category: is empty",
            "line 5, rate_bp: 10001 is outside 0..=10000",
            "line 6, rate_bp: `1.5` is not a whole number",
            "line 8, country/region/category: US `z` is already on line 7",
            "(nothing imported)",
        ]:
            self.assertIn(says, text)

    def test_the_header_is_checked(self):
        with self.assertRaises(store.BadInput) as caught:
            store.read_rates("r.csv", b"country,category,rate_bp\n")
        self.assertIn("line 1, header: expected `country,region,category,rate_bp`", str(caught.exception))


class Topology(unittest.TestCase):
    def test_the_work_queues_policy_matches_exactly_its_queues(self):
        import re

        import broker

        (policy,) = broker.Topology("t.1+").policies()
        self.assertEqual(policy["name"], "t.1+checkout-work-queues")
        self.assertEqual(
            policy["definition"],
            {"dead-letter-exchange": "t.1+checkout.dead-letters", "delivery-limit": 5},
        )
        pattern = re.compile(policy["pattern"])
        for queue in ["inventory.commands", "tax.commands", "payment.commands", "orchestrator.replies"]:
            self.assertTrue(pattern.match("t.1+" + queue), queue)
        for other in ["t.1+checkout.dead-letters", "tx1+tax.commands", "t.1+tax.commandsX"]:
            self.assertIsNone(pattern.match(other), other)

    def test_the_management_api_is_the_amqp_nodes_unless_told(self):
        import broker

        m = broker.Management("amqp://svc:s%40cret@10.1.2.3:5672/%2f", None)
        self.assertEqual((m.endpoint(), m.vhost), ("http://10.1.2.3:15672", "/"))
        m = broker.Management("amqp://a:b@h1:5672/shop,amqp://a:b@h2/shop", "http://admin:x@mgmt:8080/rabbit/")
        self.assertEqual((m.endpoint(), m.vhost), ("http://mgmt:8080/rabbit", "shop"))


class DatabaseUrl(unittest.TestCase):
    def test_one_host_or_several(self):
        target = store.Target.parse("postgres://u:p%40ss@h1:5433,[::1]:5434,h3/tax?sslmode=require")
        self.assertEqual(target.hosts, [("h1", 5433), ("::1", 5434), ("h3", 5432)])
        self.assertEqual((target.user, target.password, target.database), ("u", "p@ss", "tax"))
        self.assertEqual(target.sslmode, "require")


if __name__ == "__main__":
    unittest.main()
