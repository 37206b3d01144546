"""Chat templates through llama.cpp: by name, from the model, by architecture."""

from __future__ import annotations

import pytest

from helios_core import _llama, chat
from helios_core.errors import ChatTemplateError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_builtin_templates_are_listed():
    names = chat.builtin_templates()
    assert {"chatml", "gemma", "llama3"} <= set(names)


def test_the_default_model_falls_back_to_its_architectures_template(model):
    assert model.chat_template() is None
    assert chat.template_for(model) == "gemma"
    assert chat.template_for(model, "chatml") == "chatml"


def test_gemma_template_renders_turns_and_opens_the_models_turn():
    text = chat.apply_template("gemma", MESSAGES)
    assert text.endswith("<start_of_turn>model\n")
    assert "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n" in text  # gemma folds the system turn in


def test_chatml_template_by_name():
    text = chat.apply_template("chatml", MESSAGES, add_assistant=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_an_unknown_template_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="does not support the chat template 'no-such-template'"):
        chat.apply_template("no-such-template", MESSAGES)


def test_token_attributes(model):
    vocab = model.vocab
    end_of_turn = vocab.tokenize("<end_of_turn>", add_special=False, parse_special=True)[0]
    assert vocab.token_attr(end_of_turn) & _llama.LLAMA_TOKEN_ATTR_CONTROL
    hello = vocab.tokenize("hello", add_special=False)[0]
    assert vocab.token_attr(hello) & _llama.LLAMA_TOKEN_ATTR_NORMAL
    assert vocab.token_text(hello).endswith("hello")
