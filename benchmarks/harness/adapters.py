"""A LoRA adapter GGUF to measure and test with: random (seeded), for a model's attention projections."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helios_core.model import Model


def write_adapter(
    path,
    model: Model,
    *,
    seed: int = 0,
    rank: int = 8,
    alpha: float = 16.0,
    std: float = 0.05,
    architecture: str | None = None,
) -> Path:
    """A LoRA GGUF for `model`'s attention projections, with random A and B (seeded)."""
    import gguf

    arch = model.architecture

    def meta(key: str) -> int:
        return int(model.meta(f"{arch}.{key}"))

    n_embd, n_head, n_head_kv = model.n_embd, meta("attention.head_count"), meta("attention.head_count_kv")
    k_len, v_len = meta("attention.key_length"), meta("attention.value_length")
    projections = {  # name: (n_in, n_out) of the model's weight
        "attn_q": (n_embd, n_head * k_len),
        "attn_k": (n_embd, n_head_kv * k_len),
        "attn_v": (n_embd, n_head_kv * v_len),
        "attn_output": (n_head * v_len, n_embd),
    }
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture or arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for layer in range(model.n_layer):
        for name, (n_in, n_out) in projections.items():
            base = f"blk.{layer}.{name}.weight"
            writer.add_tensor(f"{base}.lora_a", rng.normal(0.0, std, (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"{base}.lora_b", rng.normal(0.0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
