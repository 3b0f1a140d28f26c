"""The payload side of the checks: sampled by event id, compiled once per schema, redacted
fields not held against the schema, and never a payload value in what is reported.
"""

from __future__ import annotations

import json

from eventscope.tracer.contracts import asyncapi
from eventscope.tracer.contracts.checks import ContractChecks, SchemaCheck
from eventscope.tracer.contracts.config import ContractsConfig
from tests.contracts.test_documents import V3

SCHEMA = json.dumps(
    {
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "minimum": 0},
            "card": {"type": "integer"},
            "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
        },
    },
    sort_keys=True,
)


def test_problems_say_where_and_which_rule_never_the_value() -> None:
    check = SchemaCheck()
    assert check.problems(SCHEMA, {"order_id": "o-1", "amount": 3}) == []
    problems = check.problems(SCHEMA, {"order_id": 4711, "amount": -99.5, "lines": [{"qty": 1}]})
    assert problems == [
        "$.amount: fails minimum 0",
        "$.lines[0]: required property 'sku' missing",
        "$.order_id: not of type string",
    ]
    assert not any("4711" in p or "99.5" in p for p in problems)


def test_a_redacted_field_is_not_held_against_the_schema() -> None:
    check = SchemaCheck()
    assert check.problems(SCHEMA, {"order_id": "o-1", "amount": 1, "card": "[redacted]"}) == []
    assert check.problems(SCHEMA, {"order_id": "o-1", "amount": 1, "card": "1234"}) == [
        "$.card: not of type integer"
    ]


def test_validators_are_compiled_once_per_schema() -> None:
    check = SchemaCheck()
    check.problems(SCHEMA, {"order_id": "a", "amount": 1})
    compiled = check._compiled[SCHEMA]
    check.problems(SCHEMA, {"order_id": "b", "amount": 2})
    assert check._compiled[SCHEMA] is compiled and len(check._compiled) == 1


def test_sampling_is_a_deterministic_share_of_event_ids() -> None:
    document = asyncapi.parse(V3)
    tenth = ContractChecks(ContractsConfig(documents=(document,), sample_rate=0.1))
    ids = [f"event-{n}" for n in range(20_000)]
    picked = [i for i in ids if tenth.sampled(i)]
    assert 1_600 < len(picked) < 2_400
    assert picked == [i for i in ids if ContractChecks(ContractsConfig(sample_rate=0.1)).sampled(i)]
    assert not any(ContractChecks(ContractsConfig(sample_rate=0.0)).sampled(i) for i in ids[:1000])
    assert all(ContractChecks(ContractsConfig(sample_rate=1.0)).sampled(i) for i in ids[:1000])
