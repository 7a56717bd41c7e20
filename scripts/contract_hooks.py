"""Schemathesis hooks for scripts/schemathesis: the request rules of the API
that its OpenAPI document states in words only (JSON Schema cannot say them,
or contract testers misread the `oneOf` that could), so that requests
generated as valid are valid in fact. `filter_case` and `map_case`, unlike
the body hooks, run in every phase, coverage included.
"""

import hashlib
import json
import re

import schemathesis

# The schema's own rule for the Idempotency-Key header.
KEY = re.compile(r"^[!-~]([ -~\t]*[!-~])?$")
MAX_KEY = 255


def is_operation(context, method, path):
    operation = context.operation
    return operation is not None and operation.method.upper() == method and operation.path == path


def one_line_per_sku(body):
    items = body.get("items")
    if not isinstance(items, list):
        return True
    skus = [json.dumps(item.get("sku")) for item in items if isinstance(item, dict)]
    return len(skus) == len(set(skus))


def selects_one_way(body):
    ids = body.get("saga_ids") is not None
    group = [body.get(field) is not None for field in ("step", "phase", "error")]
    return (ids and not any(group)) or (not ids and all(group))


@schemathesis.hook
def filter_case(context, case):
    body = case.body
    if not isinstance(body, dict):
        return True
    if is_operation(context, "POST", "/v1/checkouts"):
        # "One line per SKU: a SKU on two lines is refused (422)."
        return one_line_per_sku(body)
    if is_operation(context, "POST", "/v1/admin/sagas/retry"):
        # "Select either saga_ids or one failure group ... Not both."
        return selects_one_way(body)
    return True


@schemathesis.hook
def map_case(context, case):
    # An Idempotency-Key names one request body: the same key with another
    # body is refused (422), as documented. A client draws a key per
    # checkout; here a valid key is bound to its body, so the same key and
    # body still replay (200) and no two bodies share a key.
    if not is_operation(context, "POST", "/v1/checkouts") or not case.headers:
        return case
    key = case.headers.get("Idempotency-Key")
    if not isinstance(key, str) or not KEY.match(key) or len(key) > MAX_KEY:
        return case
    body = json.dumps(case.body, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(body).hexdigest()[:16]
    case.headers["Idempotency-Key"] = f"{key[: MAX_KEY - 17]}.{digest}"
    return case
