"""Structured output over HTTP: response_format, llama-server's json_schema and grammar, through the openai SDK.

The default model is a base model that follows no instruction: every output here is valid
because the constraint allows nothing else, whatever the prompt says.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PATIENCE
from tests.json_prefix import assert_object_or_its_start, is_json_prefix
from tests.server_process import PLAIN

FEW_SHOT = 'Records as JSON.\nRecord: {"id": 1, "name": "Ada"}\nRecord:'

# Schemas of the shapes clients send: nested objects, arrays with bounds, enums, bounded numbers,
# anyOf, optional fields, string patterns and formats.
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["age"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            }
        },
        "required": ["point"],
    },
    {
        "type": "object",
        "properties": {"id": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}]}},
        "required": ["id"],
    },
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "nickname": {"type": "string"}},
        "required": ["name"],
    },
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
    },
    {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 4},
    {
        "type": "object",
        "properties": {"price": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000}},
        "required": ["price"],
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string", "maxLength": 6}, "qty": {"type": "integer", "minimum": 1}},
                    "required": ["sku", "qty"],
                },
                "maxItems": 2,
            }
        },
        "required": ["items"],
    },
    {"type": "object", "properties": {"status": {"const": "done"}}, "required": ["status"]},
    {"type": "object", "properties": {"value": {"type": ["string", "null"], "maxLength": 10}}, "required": ["value"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}, "required": ["when"]},
    {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {"b": {"type": "object", "properties": {"c": {"type": "integer"}}, "required": ["c"]}},
                "required": ["b"],
            }
        },
        "required": ["a"],
    },
    {
        "type": "object",
        "properties": {"kind": {"enum": ["cat", "dog"]}, "legs": {"type": "integer", "minimum": 2, "maximum": 4}},
        "required": ["kind", "legs"],
        "additionalProperties": False,
    },
    {"type": "string", "maxLength": 12},
    {
        "type": "object",
        "properties": {
            "matrix": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}},
            }
        },
        "required": ["matrix"],
    },
    {
        "type": "object",
        "properties": {"email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"}},
        "required": ["email"],
    },
    {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"r": {"type": "integer", "minimum": 1, "maximum": 99}},
                        "required": ["r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {"w": {"type": "integer"}},
                        "required": ["w"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "required": ["shape"],
    },
]


def strict(schema):
    """As OpenAI's strict mode asks: no properties beyond those named. And bounds on free strings and
    integers: a base model left to itself extends an open object, string or number until max_tokens
    (then the output is cut, finish_reason "length", as OpenAI does)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out:
        out["properties"] = {key: strict(value) for key, value in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    if out.get("type") == "string" and not {"maxLength", "pattern", "format", "enum", "const"} & out.keys():
        out["maxLength"] = 24
    if out.get("type") == "integer":
        out.setdefault("minimum", -1000)
        out.setdefault("maximum", 1000)
    return out


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*PLAIN)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


def chat_json(client, schema: dict, max_tokens: int = 120, **kw):
    return client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": FEW_SHOT}],
        max_tokens=max_tokens,
        seed=11,
        temperature=0.7,
        response_format={"type": "json_schema", "json_schema": {"name": "record", "schema": schema, "strict": True}},
        **kw,
    )


def test_every_schema_gives_output_that_validates(client):
    schemas = [strict(schema) for schema in SCHEMAS]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda schema: chat_json(client, schema), schemas))
    for schema, reply in zip(schemas, replies, strict=True):
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", (schema, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_gives_an_object_on_completions_too(server):
    choice = httpx.post(
        f"{server.url}/v1/completions",
        timeout=PATIENCE,
        json={
            "prompt": FEW_SHOT,
            "max_tokens": 60,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
    ).json()["choices"][0]
    assert_object_or_its_start(choice["text"], choice["finish_reason"])


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)


def test_the_sdks_parse_returns_a_parsed_object(client):
    completion = client.beta.chat.completions.parse(
        model="m",
        messages=[{"role": "user", "content": "A person:"}],
        response_format=Person,
        max_tokens=100,
        temperature=0,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and 0 <= person.age <= 120


def test_the_sdks_parse_works_streamed(client):
    with client.beta.chat.completions.stream(
        model="m",
        messages=[{"role": "user", "content": "A person:"}],
        response_format=Person,
        max_tokens=100,
        temperature=0,
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person)


def test_llama_server_fields_json_schema_and_grammar(server):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["n"],
        "additionalProperties": False,
    }
    body = httpx.post(
        f"{server.url}/v1/completions",
        timeout=PATIENCE,
        json={"prompt": "n:", "max_tokens": 40, "temperature": 0, "json_schema": schema},
    ).json()
    jsonschema.validate(json.loads(body["choices"][0]["text"]), schema)
    gbnf = 'root ::= ("yes" | "no") "!"'
    body = httpx.post(
        f"{server.url}/v1/completions",
        timeout=PATIENCE,
        json={"prompt": "Answer:", "max_tokens": 10, "temperature": 0, "grammar": gbnf},
    ).json()
    assert body["choices"][0]["text"] in ("yes!", "no!")
    assert body["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_cuts_a_constrained_output_with_length(client):
    reply = chat_json(client, {"type": "array", "items": {"type": "string"}, "minItems": 30}, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "body, param",
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
            "response_format",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"grammar": "root ::= ("}, "grammar"),
        ({"json_schema": {"type": "object"}, "grammar": 'root ::= "a"'}, "grammar"),
    ],
    ids=["unknown-type-in-schema", "unknown-format", "not-an-object", "no-json-schema", "broken-gbnf", "two-fields"],
)
def test_bad_constraints_are_400s_naming_the_field(server, body, param):
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        timeout=PATIENCE,
        json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, **body},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


# --- random schemas: schema-valid output (or cut by max_tokens), a 400 for a bad schema, never a 5xx ---------

NAMES = st.sampled_from(["a", "b", "id", "name", "tags", "x"])
STRINGS = st.one_of(
    st.integers(0, 6).map(lambda n: {"type": "string", "maxLength": n}),
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(
        lambda t: {"type": "string", "minLength": t[0], "maxLength": t[0] + t[1]}
    ),
    st.lists(st.sampled_from(["red", "green", "blue", "S", "M", "L"]), min_size=1, max_size=3, unique=True).map(
        lambda values: {"type": "string", "enum": values}
    ),
    st.sampled_from(["^[a-z]{1,6}$", "^[A-Z]{2}-[0-9]{2}$", "^(yes|no)$", "^[0-9]{3}$"]).map(
        lambda pattern: {"type": "string", "pattern": pattern}
    ),
)
INTEGERS = st.tuples(st.integers(-50, 50), st.integers(0, 100)).map(
    lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
)
# A bounded number may still have any number of decimals (greedy Gemma writes -1.0000...): some get a step.
NUMBERS = st.tuples(st.integers(-20, 20), st.integers(1, 40), st.sampled_from([None, 0.5, 0.25])).map(
    lambda t: {"type": "number", "minimum": t[0], "maximum": t[0] + t[1], **({"multipleOf": t[2]} if t[2] else {})}
)
LEAVES = st.one_of(STRINGS, INTEGERS, NUMBERS, st.just({"type": "boolean"}))


def arrays(items: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(items, st.integers(0, 2), st.integers(0, 2)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}
    )


def objects(values: st.SearchStrategy) -> st.SearchStrategy:
    """Objects of 1 to 3 named properties, each required or optional."""
    return st.dictionaries(NAMES, values, min_size=1, max_size=3).flatmap(
        lambda properties: st.lists(st.sampled_from(sorted(properties)), unique=True).map(
            lambda required: {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )
    )


VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        arrays(inner), objects(inner), st.lists(inner, min_size=2, max_size=2).map(lambda options: {"anyOf": options})
    ),
    max_leaves=4,
)
# Schemas llguidance refuses: unknown types and keywords, broken patterns and references, empty ranges.
INVALID_SCHEMAS = [
    {"type": "objekt"},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-"}}, "required": ["a"]},
    {"$ref": "#/$defs/missing"},
    {"type": "integer", "minimum": 10, "maximum": 1},
    {"type": "string", "minLength": 5, "maxLength": 2},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 1},
    {"enum": []},
    {"not": {"type": "string"}},
    {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}, {"type": "integer"}]}}, "required": ["a"]},
]
SCHEMA_CASES = st.integers(0, 4).flatmap(
    lambda draw: (
        st.sampled_from(INVALID_SCHEMAS).map(lambda schema: (schema, False))
        if draw == 4
        else st.one_of(objects(VALUES), VALUES).map(lambda schema: (schema, True))
    )
)


def chat_json_or_its_error(client, schema: dict):
    try:
        return chat_json(client, schema, max_tokens=40)
    except openai.APIStatusError as error:
        return error


# 20 schemas, 4 at a time: the server's 4 slots decode them together, faster than one after another.
@settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(SCHEMA_CASES, min_size=4, max_size=4, unique_by=lambda case: json.dumps(case[0], sort_keys=True)))
def test_random_schemas_give_valid_output_or_a_400_never_a_5xx(client, cases):
    with ThreadPoolExecutor(len(cases)) as pool:
        replies = list(pool.map(lambda case: chat_json_or_its_error(client, case[0]), cases))
    for (schema, valid), reply in zip(cases, replies, strict=True):
        if isinstance(reply, openai.APIStatusError):
            assert reply.status_code == 400 and not valid, (schema, reply.status_code, reply.message)
            assert reply.param == "response_format"
            continue
        assert valid, schema
        choice = reply.choices[0]
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), schema)
        else:  # max_tokens cut it: what there is begins a JSON value
            assert choice.finish_reason == "length" and is_json_prefix(choice.message.content), choice
