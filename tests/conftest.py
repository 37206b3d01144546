"""Shared fixtures: the default model (loaded once) and llama.cpp's vocab-only GGUFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.context import Context
from helios_core.model import Model
from helios_core.resolve import default_model_path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP = ROOT / "vendor" / "llama.cpp"
VOCAB_MODELS = LLAMA_CPP / "models"


@pytest.fixture(scope="session")
def model() -> Model:
    """The default model (Gemma 3 270M Q4_K_M), shared by the whole session."""
    with Model(default_model_path()) as m:
        yield m


@pytest.fixture
def ctx(model: Model) -> Context:
    """A fresh small context over the default model."""
    with Context(model, n_ctx=1024, n_batch=256, n_threads=2) as c:
        yield c
