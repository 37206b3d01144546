"""Constrained decoding (helios_core.constraint) on the default model: valid output whatever the model prefers.

The default model is a small base model, so prompts only hint at the
format: validity must come from the constraint. Strings and arrays in the
schemas are bounded, so every run completes within its max_tokens and can
assert finish_reason "stop" on any CPU.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque

import jsonschema
import llguidance
import numpy as np
import pytest

from helios_core import constraint
from helios_core.constraint import ConstraintError, compute_masks, json_schema
from helios_core.context import Context
from helios_core.engine import Done, Request, Scheduler
from helios_core.engine import commit as engine_commit
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.errors import ClosedError, HeliosError
from helios_core.generate import GenerationParams, Generator
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sampling import SamplingState
from tests.conftest import LLAMA_CPP, THREADS
from tests.json_prefix import assert_object_or_its_start, is_json_prefix


@pytest.fixture(scope="module")
def gen(model) -> Generator:
    constraint.tokenizer_for(model)  # built once here (about 1.7 s), then shared by every processor
    with Generator(model, n_ctx=1024, n_batch=128, n_threads=THREADS) as g:
        yield g


def run(gen: Generator, prompt: str, spec: constraint.Constraint, max_tokens: int = 200, **settings):
    """Generate under `spec`; the text and the Generation (for finish_reason and steps)."""
    params = GenerationParams(max_tokens=max_tokens, processors=[spec.processor(gen.model)], **settings)
    generation = gen.generate(prompt, params)
    steps = list(generation)
    return "".join(s.text for s in steps), generation, steps


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


SCHEMAS = {
    "nested_objects": _object(
        {
            "user": _object(
                {"name": {"type": "string", "maxLength": 16}, "id": {"type": "integer", "minimum": 1, "maximum": 9999}},
                ["name", "id"],
            ),
        },
        ["user"],
    ),
    "array_min_max_items": _object(
        {"tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 2, "maxItems": 4}},
        ["tags"],
    ),
    "enums": _object(
        {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "string", "enum": ["S", "M", "L"]}},
        ["color", "size"],
    ),
    "number_bounds": _object(
        {
            "celsius": {"type": "number", "minimum": -50, "maximum": 50, "multipleOf": 0.5},
            "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
        },
        ["celsius", "count"],
    ),
    "any_of": _object(
        {
            "value": {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 100},
                    {"type": "string", "enum": ["none", "all"]},
                ]
            }
        },
        ["value"],
    ),
    "optional_fields": _object(
        {
            "title": {"type": "string", "maxLength": 20},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "note": {"type": "string", "maxLength": 12},
        },
        ["title"],
    ),
    "string_patterns": _object(
        {
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        },
        ["zip", "code"],
    ),
    "array_of_objects": {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "items": _object(
            {
                "x": {"type": "integer", "minimum": 0, "maximum": 9},
                "y": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            ["x", "y"],
        ),
    },
    "literals": _object(
        {"ok": {"type": "boolean"}, "error": {"type": "null"}, "version": {"const": 2}}, ["ok", "error", "version"]
    ),
    "refs": {
        "$defs": {
            "point": _object(
                {
                    "x": {"type": "integer", "minimum": 0, "maximum": 99},
                    "y": {"type": "integer", "minimum": 0, "maximum": 99},
                },
                ["x", "y"],
            )
        },
        **_object({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}}, ["start", "end"]),
    },
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_greedy_output_validates_against_the_schema(gen, name):
    schema = SCHEMAS[name]
    text, generation, _ = run(gen, "Data as JSON:\n", json_schema(schema), temperature=0.0)
    jsonschema.validate(json.loads(text), schema)
    assert generation.finish_reason == "stop"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sampled_output_validates_whatever_the_prompt(gen, seed):
    # A prompt that asks for something else, at a high temperature: the constraint alone makes it JSON.
    schema = SCHEMAS["nested_objects"]
    text, generation, _ = run(gen, "Write a poem about the sea.", json_schema(schema), temperature=1.5, seed=seed)
    jsonschema.validate(json.loads(text), schema)
    assert generation.finish_reason == "stop"


def test_same_seed_gives_the_same_constrained_text(gen):
    spec = json_schema(SCHEMAS["optional_fields"])
    first, _, _ = run(gen, "Data as JSON:\n", spec, temperature=1.0, seed=7)
    again, _, _ = run(gen, "Data as JSON:\n", spec, temperature=1.0, seed=7)
    assert first == again


def test_schema_true_allows_any_json_value_and_nothing_else(model):
    processor = json_schema(True).processor(model)
    logits = np.zeros(model.vocab.n_vocab, dtype=np.float32)
    out = processor(logits, SamplingState(np.zeros(1, dtype=np.int32), np.random.default_rng(0), n_prompt=1))
    first = {text: model.vocab.tokenize(text, add_special=False)[0] for text in ("{", "[", '"', "7", "true", "Hello")}
    assert {text for text, token in first.items() if np.isfinite(out[token])} == {"{", "[", '"', "7", "true"}


def test_json_object_output_is_an_object(gen):
    text, generation, _ = run(gen, "JSON:", constraint.json_object(), max_tokens=60, temperature=0.0)
    assert_object_or_its_start(text, generation.finish_reason)


@pytest.mark.parametrize(
    "document", [{"a": 'x\\y"z\u00e9\n', "b": [1, -2.5e-3, True, False, None, {}]}, [1, [2, []]], -1e7, "text"]
)
def test_is_json_prefix_accepts_every_prefix_of_json_and_nothing_else(document):
    for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, separators=(",", ":"))):
        assert all(is_json_prefix(text[:i]) for i in range(len(text) + 1))
    for broken in ('{"a": 1}}', '{"a" 1', "[1, 2]x", "{1", '{"a": tx', '"\\q', '{"a": 1]'):
        assert not is_json_prefix(broken), broken


def test_json_object_allows_any_object_and_nothing_else(model, gen):
    processor = constraint.json_object().processor(model)
    logits = np.zeros(model.vocab.n_vocab, dtype=np.float32)
    out = processor(logits, SamplingState(np.zeros(1, dtype=np.int32), np.random.default_rng(0), n_prompt=1))
    first = {text: model.vocab.tokenize(text, add_special=False)[0] for text in ("{", "[", '"', "7", "true")}
    assert {text for text, token in first.items() if np.isfinite(out[token])} == {"{"}
    # Keys no schema names, values of every type, nested: teacher-forced through the constraint, then it ends.
    anything = json.dumps({"zebra": [1, {"x": None}], "q": 'w"v', "n": -2.5e-3, "t": True, "e": {}})
    script = model.vocab.tokenize(anything, add_special=False)
    text, generation, steps = run(
        gen,
        "JSON:",
        constraint.json_object(),
        max_tokens=len(script) + 1,
        sampler=lambda logits, state: script[state.step] if state.step < len(script) else int(np.argmax(logits)),
    )
    assert text == anything
    assert model.vocab.is_eog(steps[-1].token) and generation.finish_reason == "stop"


def test_regex_output_matches_in_full(gen):
    pattern = r"\(\d{3}\) \d{3}-\d{4}"
    text, generation, _ = run(gen, "Call us at", constraint.regex(pattern), temperature=0.0)
    assert re.fullmatch(pattern, text)
    assert generation.finish_reason == "stop"


def test_lark_grammar_output_derives_from_it(gen):
    lark = 'start: greeting ", " NAME "!"\ngreeting: "Hello" | "Good morning"\nNAME: /[A-Z][a-z]{1,8}/\n'
    text, generation, _ = run(gen, "Greet the guest:", constraint.grammar(lark), temperature=0.8, seed=4)
    assert re.fullmatch(r"(Hello|Good morning), [A-Z][a-z]{1,8}!", text)
    assert constraint.grammar(lark).kind == "lark"
    assert generation.finish_reason == "stop"


def test_gbnf_grammar_is_converted_and_followed(gen):
    gbnf = 'root ::= "Answer: " verdict "."\nverdict ::= "yes" | "no" | "maybe"\n'
    spec = constraint.grammar(gbnf)
    text, generation, _ = run(gen, "Is the sky green?", spec, temperature=0.0)
    assert spec.kind == "gbnf"
    assert text in ("Answer: yes.", "Answer: no.", "Answer: maybe.")
    assert generation.finish_reason == "stop"


def test_llama_cpp_gbnf_grammars_compile():
    # The grammars shipped with llama.cpp, converted by llguidance's GBNF converter.
    files = sorted((LLAMA_CPP / "grammars").glob("*.gbnf"))
    assert files
    for path in files:
        assert constraint.grammar(path.read_text()).kind == "gbnf", path.name


def test_complete_output_ends_with_an_end_of_generation_token(model, gen):
    text, generation, steps = run(gen, "Is water wet? Answer:", constraint.regex(" ?(yes|no)"), temperature=0.0)
    assert text.strip() in ("yes", "no")
    assert model.vocab.is_eog(steps[-1].token)
    assert generation.finish_reason == "stop"


def test_max_tokens_cuts_a_constrained_output_with_length(gen):
    text, generation, steps = run(gen, "Letters:", constraint.regex("[a-z]{200}"), max_tokens=3, temperature=0.0)
    assert len(steps) == 3 and re.fullmatch("[a-z]+", text)
    assert generation.finish_reason == "length"


def test_logprobs_are_reported_under_a_constraint(gen):
    schema = SCHEMAS["enums"]
    text, generation, steps = run(
        gen, "Data as JSON:\n", json_schema(schema), temperature=0.0, logprobs=True, top_logprobs=3
    )
    jsonschema.validate(json.loads(text), schema)
    assert all(s.logprob is not None and s.logprob <= 0.0 and len(s.top_logprobs) == 3 for s in steps)


def test_composes_with_penalties_and_logit_bias(model, gen):
    schema = SCHEMAS["string_patterns"]
    tempting = {t: 100.0 for t in model.vocab.tokenize(" hello world", add_special=False)}  # all forbidden here
    text, generation, _ = run(
        gen,
        "Data as JSON:\n",
        json_schema(schema),
        temperature=0.9,
        seed=5,
        repetition_penalty=1.5,
        presence_penalty=2.0,
        logit_bias=tempting,
    )
    jsonschema.validate(json.loads(text), schema)
    assert generation.finish_reason == "stop"


def test_composes_with_a_custom_sampler(gen):
    def uniform_among_allowed(logits, state: SamplingState) -> int:
        return int(state.rng.choice(np.flatnonzero(np.isfinite(logits))))

    schema = SCHEMAS["string_patterns"]
    text, generation, _ = run(gen, "Data as JSON:\n", json_schema(schema), sampler=uniform_among_allowed, seed=6)
    jsonschema.validate(json.loads(text), schema)
    assert generation.finish_reason == "stop"


def test_a_token_outside_the_constraint_ends_the_request_with_constraint_error(model, gen):
    banned = model.vocab.tokenize("zzz", add_special=False)[0]
    params = GenerationParams(
        max_tokens=5, processors=[constraint.regex("[0-9]+").processor(model)], sampler=lambda logits, state: banned
    )  # ignores the mask
    with pytest.raises(ConstraintError, match="does not continue the constraint"):
        gen.generate("Number:", params).text()


def test_a_processor_follows_one_request_only(model, gen):
    processor = constraint.regex("[0-9]{2}").processor(model)
    params = GenerationParams(max_tokens=10, processors=[processor], temperature=0.0)
    gen.generate("Number:", params).text()
    with pytest.raises(ConstraintError, match="one per request"):
        gen.generate("Another number:", params).text()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: json_schema({"type": "objekt"}), "objekt"),
        (lambda: json_schema('{"type": "object",'), "not valid JSON"),
        (lambda: json_schema(False), "allows no value"),
        (lambda: json_schema({"$ref": "#/$defs/missing"}), "missing"),
        (lambda: constraint.regex("[a-"), "unclosed character class"),
        (lambda: constraint.grammar("start: undefined_rule"), "undefined_rule"),
        (lambda: constraint.grammar('root ::= "a" missing'), "missing"),
    ],
)
def test_invalid_specs_raise_constraint_error_with_llguidance_message(make, message):
    with pytest.raises(ConstraintError, match=message) as raised:
        make()
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, HeliosError)
    assert "<state>" not in str(raised.value) and "<non-verbose" not in str(raised.value)


def test_a_grammar_naming_a_token_the_vocabulary_lacks_fails_validate(model):
    spec = constraint.grammar("start: <no_such_token_here>")  # well-formed; wrong only for this vocabulary
    with pytest.raises(ConstraintError, match="no_such_token_here"):
        spec.validate(model)


@pytest.mark.parametrize("pool", [None, 2], ids=["default", "pool-of-2"])
def test_masks_computed_together_equal_masks_computed_alone(model, pool):
    specs = [json_schema(SCHEMAS["enums"]), constraint.regex("[0-9]{3}"), json_schema(SCHEMAS["refs"])]
    prefixes = ['{"color": "re', "4", '{"start": {"x": 1']
    histories = [np.array(model.vocab.tokenize(p, add_special=False), dtype=np.int32) for p in prefixes]
    logits = np.random.default_rng(0).standard_normal(model.vocab.n_vocab).astype(np.float32)
    together = [spec.processor(model) for spec in specs]
    # The default computes them on this thread where the machine has too few CPUs for a pool; a pool in parallel.
    compute_masks(list(zip(together, histories, strict=True)), llguidance.LLExecutor(pool) if pool else None)
    for spec, processor, history in zip(specs, together, histories, strict=True):
        state = SamplingState(history, np.random.default_rng(0), step=len(history), n_prompt=0)
        alone = spec.processor(model)(logits, state)
        assert np.array_equal(processor(logits, state), alone)
        assert 0 < np.isfinite(alone).sum() < alone.size


# --- continuous batching: the masks of every constrained slot of a step in one call ----------------


@pytest.fixture
def batched(model):
    """A three-slot scheduler over a context of its own."""
    with Context(model, n_ctx=1536, n_seq_max=3, n_batch=256, n_threads=THREADS) as ctx:
        yield Scheduler(LlamaRunner(ctx), n_ctx_per_seq=512)


@pytest.fixture
def mask_calls(monkeypatch) -> list[int]:
    """The number of processors in each of the scheduler's calls of compute_masks."""
    calls: list[int] = []

    def counted(items, executor=None):
        calls.append(len(items))
        compute_masks(items, executor)

    monkeypatch.setattr(engine_commit, "compute_masks", counted)
    return calls


def run_together(s: Scheduler, prompts: list[str], params: list[GenerationParams]) -> list[tuple[str, Done, list]]:
    """Submit all, step until all are done; each request's text, Done event and steps."""
    events = [deque() for _ in prompts]
    for prompt, request_params, sink in zip(prompts, params, events, strict=True):
        s.submit(Request(s.model.vocab.tokenize(prompt), request_params, sink.append))
    while s.has_work:
        s.step()
    out = []
    for evs in events:
        steps = [e for e in evs if not isinstance(e, Done)]
        out.append(("".join(step.text for step in steps), evs[-1], steps))
    return out


def test_masks_of_constrained_slots_are_computed_in_one_call_per_step(model, batched, mask_calls):
    schema = SCHEMAS["enums"]
    params = [
        GenerationParams(max_tokens=60, temperature=0.0, constraint=json_schema(schema)),
        GenerationParams(max_tokens=60, temperature=0.0, constraint=constraint.regex("[0-9]{4}")),
        GenerationParams(max_tokens=8, temperature=0.0),
    ]
    (text, done, steps), (digits, done_digits, digit_steps), (_, free, _) = run_together(
        batched, ["Data as JSON:\n", "Year:", "Hello"], params
    )
    jsonschema.validate(json.loads(text), schema)
    assert re.fullmatch("[0-9]{4}", digits)
    assert done.finish_reason == done_digits.finish_reason == "stop" and free.error is None
    assert 2 in mask_calls and max(mask_calls) == 2  # both constrained slots together, never the free one
    # Every step of a constrained request had its mask computed ahead; its end-of-generation token needs none.
    assert sum(mask_calls) == len(steps) + len(digit_steps)


def test_a_constraint_the_scheduler_cannot_see_computes_its_own_mask(model, batched, mask_calls):
    # Wrapped in a plain function, the processor is no ConstraintProcessor to the scheduler: it falls back.
    processor = constraint.regex("[0-9]{4}").processor(model)
    params = [
        GenerationParams(max_tokens=10, temperature=0.0, processors=[lambda logits, st: processor(logits, st)]),
        GenerationParams(max_tokens=10, temperature=0.0, constraint=constraint.regex("[a-z]{3}")),
    ]
    (digits, done, _), (letters, _, letter_steps) = run_together(batched, ["Year:", "Word:"], params)
    assert re.fullmatch("[0-9]{4}", digits) and re.fullmatch("[a-z]{3}", letters)
    assert done.finish_reason == "stop"
    assert set(mask_calls) == {1} and sum(mask_calls) == len(letter_steps)


def test_batched_constraints_compose_with_processors_before_them_and_logprobs(model, batched):
    schema = SCHEMAS["string_patterns"]
    seen_unmasked = []

    def before(logits, state):  # runs before the constraint: the row it gets is not masked yet
        seen_unmasked.append(bool(np.isfinite(logits).all()))
        return logits

    tempting = {t: 100.0 for t in model.vocab.tokenize(" hello world", add_special=False)}  # all forbidden here
    params = [
        GenerationParams(
            max_tokens=60,
            temperature=0.9,
            seed=5,
            constraint=json_schema(schema),
            processors=[before],
            logit_bias=tempting,
            repetition_penalty=1.5,
            logprobs=True,
            top_logprobs=2,
        )
        for _ in range(3)
    ]
    for text, done, steps in run_together(batched, ["Data as JSON:\n", "Codes:", "Zip codes, as JSON:"], params):
        jsonschema.validate(json.loads(text), schema)
        assert done.finish_reason == "stop"
        assert all(s.logprob is not None and s.logprob <= 0.0 and len(s.top_logprobs) == 2 for s in steps)
    assert seen_unmasked and all(seen_unmasked)


class ArgmaxRows:
    """A BatchSampler: the best token of each row."""

    def __call__(self, rows, states):
        return np.argmax(rows, axis=1)


def test_batched_constraints_compose_with_a_batch_sampler(model, batched, mask_calls):
    sampler = ArgmaxRows()
    schemas = [SCHEMAS["nested_objects"], SCHEMAS["literals"]]
    params = [
        GenerationParams(max_tokens=80, batch_sampler=sampler, constraint=json_schema(schema)) for schema in schemas
    ] + [GenerationParams(max_tokens=5, batch_sampler=sampler)]
    results = run_together(batched, ["Data as JSON:\n", "Status:", "Hello"], params)
    for schema, (text, done, _) in zip(schemas, results, strict=False):
        jsonschema.validate(json.loads(text), schema)
        assert done.finish_reason == "stop"
    assert results[2][1].error is None
    assert max(mask_calls) == 2


def test_a_constraint_error_or_a_cancel_ends_its_request_only(model, batched):
    banned = model.vocab.tokenize("zzz", add_special=False)[0]
    schema = SCHEMAS["array_min_max_items"]
    events = [deque() for _ in range(3)]
    ignores_the_mask = GenerationParams(
        max_tokens=5, constraint=constraint.regex("[0-9]+"), sampler=lambda logits, state: banned
    )
    requests = [
        Request(model.vocab.tokenize("Number:"), ignores_the_mask, events[0].append),
        Request(
            model.vocab.tokenize("Tags:"),
            GenerationParams(max_tokens=100, temperature=0.0, constraint=json_schema(schema)),
            events[1].append,
        ),
        Request(
            model.vocab.tokenize("Year:"),
            GenerationParams(max_tokens=100, temperature=0.0, constraint=constraint.regex("[0-9]{40}")),
            events[2].append,
        ),
    ]
    for request in requests:
        batched.submit(request)
    while batched.has_work:
        batched.step()
        if len(events[2]) == 3:
            requests[2].cancel()  # mid-way, while the others still run
    refused, tags, cancelled = (evs[-1] for evs in events)
    assert isinstance(refused.error, ConstraintError) and "does not continue the constraint" in str(refused.error)
    assert cancelled.finish_reason == "cancelled"
    assert tags.error is None and tags.finish_reason == "stop"
    jsonschema.validate(json.loads("".join(e.text for e in list(events[1])[:-1])), schema)


def test_tokenizer_is_built_once_shared_and_dropped_on_close():
    # A model of its own (vocabulary only: no weights), so closing it leaves the session's model alone.
    vocab_model = Model(default_model_path(), vocab_only=True)
    built: list = []
    threads = [threading.Thread(target=lambda: built.append(constraint.tokenizer_for(vocab_model))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 3 and all(t is built[0] for t in built)
    processor = constraint.regex("[a-z]+").processor(vocab_model)
    logits = np.zeros(vocab_model.vocab.n_vocab, dtype=np.float32)
    state = SamplingState(np.zeros(1, dtype=np.int32), np.random.default_rng(0), step=0, n_prompt=1)
    assert np.isfinite(processor(logits, state)).any()

    vocab_model.close()
    with pytest.raises(ClosedError):
        processor(logits, state)
    with pytest.raises(ClosedError):
        constraint.regex("[a-z]+").processor(vocab_model)
    with pytest.raises(ClosedError):
        constraint.tokenizer_for(vocab_model)
