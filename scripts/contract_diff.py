#!/usr/bin/env python3
"""Reports every breaking change between two generated message contracts.

usage: contract_diff.py OLD_DIR NEW_DIR

Each directory holds a contract as `contract generate` writes it:
`schemas/*.json` (draft-07 JSON Schemas) and `asyncapi.json`. Prints one
line per breaking change, naming the message and the field, and exits 1 if
there is any, 0 if there is none, 2 if a contract cannot be read.

A change is breaking when a service of the old release, still running
during a rolling upgrade, would dead-letter or misread what a service of
the new one sends, or the other way round:
- a message, schema, channel, operation or queue removed or renamed;
- a field removed;
- a new required field, or a field that became required;
- a field added to an object whose old readers refuse unknown fields;
- unknown fields refused where they were ignored;
- a type narrowed (a type gone from a union, `integer` where `number`
  was, an enum value or a tagged variant gone, a bound tightened, a
  pattern added) or widened (a type added to a union, `number` where
  `integer` was, a format changed): an old reader parses the old type.

Allowed: new optional fields where unknown fields are ignored, new
messages and schemas, new enum values and tagged variants (read by every
consumer before a producer sends them), relaxed bounds, and anything that
only documents (title, description, default, examples).

Standard library only, so CI needs nothing but Python 3.
"""

import json
import os
import sys

# How the contract says that a build never redeclares an existing queue
# (shared/src/contract.rs, DECLARATION).
PASSIVE_DECLARATION = "an existing queue is used as it is"

# Keywords whose value only documents the schema.
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$comment"}

# A larger value of these accepts less.
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
# A smaller value of these accepts less.
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


class Contract:
    """One contract directory, read whole."""

    def __init__(self, directory):
        self.directory = directory
        self.schemas = {}
        schemas = os.path.join(directory, "schemas")
        if os.path.isdir(schemas):
            for name in sorted(os.listdir(schemas)):
                if name.endswith(".json"):
                    self.schemas[name[: -len(".json")]] = read_json(os.path.join(schemas, name))
        asyncapi = os.path.join(directory, "asyncapi.json")
        self.asyncapi = read_json(asyncapi) if os.path.exists(asyncapi) else None
        if not self.schemas and self.asyncapi is None:
            raise ValueError(f"{directory}: no schemas/*.json and no asyncapi.json")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve(root, schema):
    """`schema` with its local `$ref`s followed; external refs stay as they are."""
    seen = set()
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if not ref.startswith("#") or ref in seen:
            return schema
        seen.add(ref)
        target = root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise ValueError(f"unresolvable $ref {ref}")
        schema = target
    return schema


def accepts_anything(schema):
    if schema is True:
        return True
    return isinstance(schema, dict) and not (set(schema) - ANNOTATIONS)


def types_of(schema):
    """The JSON types a schema allows, or None when it does not say."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return set(kind)
    values = allowed_values(schema)
    if values is not None:
        return {json_type(v) for v in values}
    return None


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def covered(kind, kinds):
    return kind in kinds or (kind == "integer" and "number" in kinds)


def allowed_values(schema):
    """`const` and `enum` alike, as a list, or None."""
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return schema["enum"]
    return None


def show(value):
    return json.dumps(value, sort_keys=True)


class Comparer:
    def __init__(self):
        self.breaks = []

    def report(self, where, path, what):
        field = path or "(root)"
        self.breaks.append(f"{where}: {field}: {what}")

    def schema(self, where, old_root, old, new_root, new, path="", seen=None):
        """Compares a schema of the old contract with the new one's."""
        seen = set() if seen is None else seen
        old = resolve(old_root, old)
        new = resolve(new_root, new)
        key = (id(old), id(new))
        if key in seen:
            return
        seen.add(key)

        if accepts_anything(old) and accepts_anything(new):
            return
        if accepts_anything(old):
            self.report(where, path, "narrowed: accepted anything, now constrained")
            return
        if accepts_anything(new):
            self.report(where, path, "widened: now accepts anything")
            return
        if old is False or new is False:
            if old is not new:
                self.report(where, path, f"changed from {show(old)} to {show(new)}")
            return

        old_ref, new_ref = old.get("$ref"), new.get("$ref")
        if old_ref is not None or new_ref is not None:
            # Only external references are left: they name another file.
            if old_ref != new_ref:
                self.report(where, path, f"refers to {new_ref} instead of {old_ref}")
            return

        self.types(where, path, old, new)
        self.values(where, path, old, new)
        self.bounds(where, path, old, new)
        self.properties(where, old_root, old, new_root, new, path, seen)
        if isinstance(old.get("items"), (dict, bool)) and isinstance(new.get("items"), (dict, bool)):
            self.schema(where, old_root, old["items"], new_root, new["items"], f"{path}[]", seen)
        for keyword in ("oneOf", "anyOf"):
            self.variants(where, keyword, old_root, old, new_root, new, path, seen)
        self.all_of(where, old_root, old, new_root, new, path, seen)

    def types(self, where, path, old, new):
        old_types, new_types = types_of(old), types_of(new)
        if old_types is None and new_types is None:
            return
        if old_types is None:
            self.report(where, path, f"narrowed: any type, now only {sorted(new_types)}")
            return
        if new_types is None:
            self.report(where, path, f"widened: was {sorted(old_types)}, now any type")
            return
        for kind in sorted(old_types):
            if not covered(kind, new_types):
                self.report(where, path, f"narrowed: type {kind} no longer accepted")
        for kind in sorted(new_types):
            if not covered(kind, old_types):
                self.report(where, path, f"widened: type {kind} now accepted; old readers refuse it")
        if old.get("format") != new.get("format"):
            self.report(
                where, path, f"format changed from {old.get('format')} to {new.get('format')}"
            )

    def values(self, where, path, old, new):
        old_values, new_values = allowed_values(old), allowed_values(new)
        if new_values is None:
            return
        if old_values is None:
            self.report(where, path, f"narrowed: now only {show(new_values)}")
            return
        gone = [v for v in old_values if v not in new_values]
        if gone:
            self.report(where, path, f"narrowed: value {show(gone)[1:-1]} removed")

    def bounds(self, where, path, old, new):
        for keyword in LOWER_BOUNDS:
            was, now = old.get(keyword), new.get(keyword)
            if now is not None and (was is None or now > was):
                self.report(where, path, f"narrowed: {keyword} {was} -> {now}")
        for keyword in UPPER_BOUNDS:
            was, now = old.get(keyword), new.get(keyword)
            if now is not None and (was is None or now < was):
                self.report(where, path, f"narrowed: {keyword} {was} -> {now}")
        if new.get("pattern") is not None and new.get("pattern") != old.get("pattern"):
            self.report(where, path, f"narrowed: pattern {old.get('pattern')} -> {new['pattern']}")
        if new.get("multipleOf") is not None and new.get("multipleOf") != old.get("multipleOf"):
            self.report(where, path, f"narrowed: multipleOf {old.get('multipleOf')} -> {new['multipleOf']}")

    def properties(self, where, old_root, old, new_root, new, path, seen):
        old_props = old.get("properties") or {}
        new_props = new.get("properties") or {}
        old_required = set(old.get("required") or [])
        new_required = set(new.get("required") or [])
        old_closed = old.get("additionalProperties") is False
        new_closed = new.get("additionalProperties") is False
        prefix = f"{path}." if path else ""

        for name in old_props:
            if name not in new_props:
                self.report(where, prefix + name, "field removed")
        for name in new_props:
            if name in old_props:
                continue
            if name in new_required:
                self.report(where, prefix + name, "new required field")
            elif old_closed:
                self.report(
                    where, prefix + name, "field added where old readers refuse unknown fields"
                )
        for name in sorted(new_required - old_required):
            if name in old_props:
                self.report(where, prefix + name, "field became required")
            elif name not in new_props:
                self.report(where, prefix + name, "new required field")
        if new_closed and not old_closed:
            self.report(where, path, "unknown fields now refused")
        for name in old_props:
            if name in new_props:
                self.schema(
                    where, old_root, old_props[name], new_root, new_props[name], prefix + name, seen
                )
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.schema(where, old_root, old_extra, new_root, new_extra, f"{path}{{*}}", seen)

    def variants(self, where, keyword, old_root, old, new_root, new, path, seen):
        old_branches = old.get(keyword)
        new_branches = new.get(keyword)
        if old_branches is None and new_branches is None:
            return
        if old_branches is None or new_branches is None:
            self.report(where, path, f"{keyword} {'added' if old_branches is None else 'removed'}")
            return
        old_keyed = keyed(old_root, old_branches)
        new_keyed = keyed(new_root, new_branches)
        for label, branch in old_keyed.items():
            if label not in new_keyed:
                self.report(where, path, f"narrowed: variant {label} removed")
                continue
            self.schema(
                where, old_root, branch, new_root, new_keyed[label], f"{path}({label})", seen
            )
        for label, branch in new_keyed.items():
            if label not in old_keyed and not tag_of(resolve(new_root, branch)):
                self.report(where, path, f"widened: variant {label} added; old readers refuse it")

    def all_of(self, where, old_root, old, new_root, new, path, seen):
        old_parts, new_parts = old.get("allOf") or [], new.get("allOf") or []
        if len(old_parts) != len(new_parts):
            self.report(where, path, f"allOf has {len(new_parts)} parts, had {len(old_parts)}")
            return
        for i, (o, n) in enumerate(zip(old_parts, new_parts)):
            self.schema(where, old_root, o, new_root, n, f"{path}&{i}", seen)


def tag_of(branch):
    """`outcome=ok` for a variant told apart by a constant property."""
    if not isinstance(branch, dict):
        return ""
    tags = []
    for name, prop in sorted((branch.get("properties") or {}).items()):
        values = allowed_values(prop) if isinstance(prop, dict) else None
        if values is not None and len(values) == 1:
            tags.append(f"{name}={show(values[0])}")
    return ",".join(tags)


def keyed(root, branches):
    """Variants by what tells them apart: their tag, their reference, their type."""
    out = {}
    for i, branch in enumerate(branches):
        resolved = resolve(root, branch)
        label = tag_of(resolved)
        if not label and isinstance(branch, dict) and "$ref" in branch:
            label = branch["$ref"].rsplit("/", 1)[-1]
        if not label and isinstance(resolved, dict) and "type" in resolved:
            label = f"type={show(resolved['type'])}"
        if not label or label in out:
            label = f"#{i}"
        out[label] = branch
    return out


def kept(comparer, where, old, new, kind):
    """(path, old entry, new entry) for each of the old document's `kind`s
    (channels, operations) that the new one still has; each one it lost is
    reported removed, in the old document's order."""
    new_entries = new.get(f"{kind}s") or {}
    for key, entry in (old.get(f"{kind}s") or {}).items():
        here = f"{kind}s.{key}"
        if key not in new_entries:
            comparer.report(where, here, f"{kind} removed")
            continue
        yield here, entry, new_entries[key]


def compare_asyncapi(comparer, old, new):
    where = "asyncapi"
    if old is None:
        return
    if new is None:
        comparer.report(where, "", "document removed")
        return

    for here, channel, other in kept(comparer, where, old, new, "channel"):
        if channel.get("address") != other.get("address"):
            comparer.report(
                where, here, f"address {show(channel.get('address'))} -> {show(other.get('address'))}"
            )
        old_amqp = (channel.get("bindings") or {}).get("amqp") or {}
        new_amqp = (other.get("bindings") or {}).get("amqp") or {}
        for part in ("exchange", "queue"):
            for field in ("name", "type", "durable", "autoDelete", "exclusive"):
                was = (old_amqp.get(part) or {}).get(field)
                now = (new_amqp.get(part) or {}).get(field)
                if was != now:
                    comparer.report(where, f"{here}.{part}.{field}", f"{show(was)} -> {show(now)}")
        old_args = channel.get("x-queue-arguments") or {}
        new_args = other.get("x-queue-arguments") or {}
        # A build that uses an existing queue as it is (never redeclaring
        # it) may create new queues with other arguments: no running build
        # declares them against each other. Its changeable settings are a
        # policy, which an explicit step applies.
        passive = str(other.get("x-declaration") or "").startswith(PASSIVE_DECLARATION)
        for name in sorted(set(old_args) | set(new_args)) if not passive else ():
            if old_args.get(name) != new_args.get(name):
                # The broker refuses (PRECONDITION_FAILED) a declaration whose
                # arguments differ from the queue's: old and new services
                # could not both declare it. Settings that change are policies.
                comparer.report(
                    where,
                    f"{here}.{name}",
                    f"queue argument {show(old_args.get(name))} -> {show(new_args.get(name))}",
                )
        for binding in channel.get("x-bound-to") or []:
            if binding not in (other.get("x-bound-to") or []):
                comparer.report(where, here, f"binding {show(binding)} removed")
        for message in channel.get("messages") or {}:
            if message not in (other.get("messages") or {}):
                comparer.report(where, f"{here}.messages.{message}", "message no longer on this channel")

    for here, operation, other in kept(comparer, where, old, new, "operation"):
        for field in ("action", "channel"):
            if operation.get(field) != other.get(field):
                comparer.report(
                    where, f"{here}.{field}", f"{show(operation.get(field))} -> {show(other.get(field))}"
                )
        old_messages = [m.get("$ref") for m in operation.get("messages") or []]
        new_messages = [m.get("$ref") for m in other.get("messages") or []]
        for ref in old_messages:
            if ref not in new_messages:
                comparer.report(where, here, f"message {ref} no longer sent or received")

    old_components, new_components = old.get("components") or {}, new.get("components") or {}
    old_messages = old_components.get("messages") or {}
    new_messages = new_components.get("messages") or {}
    for key, message in old_messages.items():
        here = f"message {message.get('name', key)}"
        if key not in new_messages:
            comparer.report(here, "", "message removed")
            continue
        other = new_messages[key]
        for field in ("name", "contentType"):
            if message.get(field) != other.get(field):
                comparer.report(here, field, f"{show(message.get(field))} -> {show(other.get(field))}")
        old_type = ((message.get("bindings") or {}).get("amqp") or {}).get("messageType")
        new_type = ((other.get("bindings") or {}).get("amqp") or {}).get("messageType")
        if old_type != new_type:
            comparer.report(here, "type", f"{show(old_type)} -> {show(new_type)}")
        for part in ("payload", "headers"):
            if part in message:
                comparer.schema(here, old, message[part], new, other.get(part, True), part)

    # What they hold is compared where messages use them.
    new_schemas = new_components.get("schemas") or {}
    for key in old_components.get("schemas") or {}:
        if key not in new_schemas:
            comparer.report(where, f"components.schemas.{key}", "schema removed")


def compare(old_dir, new_dir):
    """Every breaking change from the contract in old_dir to the one in new_dir."""
    old, new = Contract(old_dir), Contract(new_dir)
    comparer = Comparer()
    for name, schema in old.schemas.items():
        if name not in new.schemas:
            comparer.report(name, "", "schema removed (message removed or renamed)")
            continue
        comparer.schema(name, schema, schema, new.schemas[name], new.schemas[name])
    compare_asyncapi(comparer, old.asyncapi, new.asyncapi)
    return comparer.breaks


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        breaks = compare(argv[1], argv[2])
    except (OSError, ValueError) as error:
        print(f"contract_diff: {error}", file=sys.stderr)
        return 2
    for line in breaks:
        print(f"BREAKING {line}")
    if breaks:
        print(
            f"{len(breaks)} breaking change(s) from {argv[1]} to {argv[2]}: make it compatible, "
            "or bring it as a new envelope version or message type (contract/README.md)",
            file=sys.stderr,
        )
        return 1
    print(f"no breaking change from {argv[1]} to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
