"""A hypothesis state machine over helios_core's public objects, run as its own process.

Opens and closes models, contexts and generators in random orders while
tokenizing, decoding, generating and reading logits views. Any misuse must
raise a HeliosError (or ValueError for a bad argument); a crash in llama.cpp
ends this process with a signal, which tests/test_lifecycle.py reports.

Run: python tests/lifecycle_machine.py [max_examples]
"""

from __future__ import annotations

import os
import sys

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from helios_core import Batch, Context, GenerationParams, Generator, HeliosError, Model, default_model_path

THREADS = int(os.environ.get("HELIOS_TEST_THREADS", "2"))
PATH = default_model_path()
EXPECTED = (HeliosError, ValueError)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.models: list[Model] = []
        self.contexts: list[Context] = []
        self.generators: list[Generator] = []
        self.views: list[np.ndarray] = []  # logits views, read after any close

    def teardown(self):
        for model in self.models:
            model.close()

    @rule(vocab_only=st.booleans())
    def open_model(self, vocab_only):
        if len(self.models) < 3:
            self.models.append(Model(PATH, vocab_only=vocab_only))

    @rule(data=st.data())
    def close_model(self, data):
        if self.models:
            data.draw(st.sampled_from(self.models)).close()

    @rule(data=st.data(), n_seq_max=st.integers(1, 2))
    def open_context(self, data, n_seq_max):
        if self.models and len(self.contexts) < 4:
            model = data.draw(st.sampled_from(self.models))
            try:
                self.contexts.append(Context(model, n_ctx=256, n_batch=32, n_seq_max=n_seq_max, n_threads=THREADS))
            except EXPECTED:
                pass

    @rule(data=st.data())
    def close_context(self, data):
        if self.contexts:
            data.draw(st.sampled_from(self.contexts)).close()

    @rule(data=st.data(), own=st.booleans())
    def open_generator(self, data, own):
        if not self.models or len(self.generators) >= 3:
            return
        model = data.draw(st.sampled_from(self.models))
        try:
            if own or not self.contexts:
                self.generators.append(Generator(model, n_ctx=256, n_batch=32, n_threads=THREADS))
            else:
                self.generators.append(Generator(model, data.draw(st.sampled_from(self.contexts))))
        except EXPECTED:
            pass

    @rule(data=st.data())
    def close_generator(self, data):
        if self.generators:
            data.draw(st.sampled_from(self.generators)).close()

    @rule(data=st.data(), text=st.text(max_size=20))
    def tokenize(self, data, text):
        if self.models:
            try:
                data.draw(st.sampled_from(self.models)).vocab.tokenize(text)
            except EXPECTED:
                pass

    @rule(data=st.data(), token=st.integers(-5, 300_000))
    def token_queries(self, data, token):
        if self.models:
            vocab = data.draw(st.sampled_from(self.models)).vocab
            for query in (vocab.is_eog, vocab.is_control, vocab.token_to_piece, vocab.token_attr):
                try:
                    query(token)
                except EXPECTED:
                    pass

    @rule(
        data=st.data(),
        tokens=st.lists(st.integers(-2, 262_200), min_size=0, max_size=40),
        start=st.integers(-2, 300),
        seq=st.integers(-1, 2),
        keep=st.booleans(),
    )
    def decode(self, data, tokens, start, seq, keep):
        if not self.contexts:
            return
        ctx = data.draw(st.sampled_from(self.contexts))
        batch = Batch(64)
        try:
            batch.set(tokens, start, seq)
            ctx.decode(batch)
            view = ctx.logits(-1)
        except EXPECTED:
            return
        # A view is documented as valid until the next decode; close() must not free it.
        self.views = [view] if keep else []

    @rule(
        data=st.data(),
        op=st.sampled_from(["seq_rm", "seq_pos_min", "seq_pos_max", "seq_keep", "seq_cp"]),
        seq=st.integers(-2, 3),
    )
    def memory(self, data, op, seq):
        if self.contexts:
            ctx = data.draw(st.sampled_from(self.contexts))
            try:
                if op == "seq_cp":
                    ctx.seq_cp(seq, 0)
                else:
                    getattr(ctx, op)(seq)
            except EXPECTED:
                pass

    @rule(data=st.data(), n=st.integers(1, 4), stop_early=st.booleans())
    def generate(self, data, n, stop_early):
        if not self.generators:
            return
        generator = data.draw(st.sampled_from(self.generators))
        try:
            generation = generator.generate("Once upon a time", GenerationParams(max_tokens=n, temperature=0))
            for i, _ in enumerate(generation):
                if stop_early and i == 0:
                    break
        except EXPECTED:
            pass

    @invariant()
    def views_stay_readable(self):
        for view in self.views:
            float(view.sum())  # reads every element: a freed buffer would crash here


if __name__ == "__main__":
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    print("lifecycle: no crash")
