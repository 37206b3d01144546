"""Write a tiny Qwen2-VL text model (arch "qwen2vl") with random weights, for M-RoPE tests without a real one.

Two blocks, n_embd 64 (mmproj.py's --qwen2vl projector writes 64-wide embeddings to match),
4 query heads of 16 over 2 KV heads, and M-RoPE dimension sections (2, 3, 3, 0): as in
Qwen2-VL, a text token's three sections share one position and an image row's differ
(temporal, row, column). The tokenizer is a byte-level SentencePiece vocabulary ("llama"
model, byte fallback): every text tokenizes, one token a byte. What it says is noise;
tests check positions and logits against llama.cpp's own path, never words.

    python -m benchmarks.harness.qwen2vl OUT.gguf [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

N_EMBD = 64
N_FF = 128
N_HEAD = 4
N_HEAD_KV = 2
N_LAYER = 2
ROPE_SECTIONS = (2, 3, 3, 0)  # pairs of rotary dimensions per section: temporal, height, width, (unused)
SPECIALS = ("<unk>", "<s>", "</s>")
# SentencePiece's token types: normal, unknown, control, byte.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def write_qwen2vl_model(path: str | Path, *, seed: int = 0, std: float = 0.2) -> Path:
    """A random "qwen2vl" GGUF of n_embd N_EMBD and a byte vocabulary (259 ids + "▁")."""
    import gguf

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    tokens = [*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), "\u2581"]
    types = [_UNKNOWN, _CONTROL, _CONTROL, *([_BYTE] * 256), _NORMAL]
    writer = gguf.GGUFWriter(str(path), "qwen2vl")
    writer.add_string("general.name", "helios tiny random qwen2vl")
    writer.add_context_length(4096)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_array("qwen2vl.rope.dimension_sections", list(ROPE_SECTIONS))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    # numpy shapes are ggml's ne reversed: a linear layer is (n_out, n_in).
    head = N_EMBD // N_HEAD
    writer.add_tensor("token_embd.weight", weight(len(tokens), N_EMBD) * 5.0)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYER):
        prefix = f"blk.{i}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        # Large queries and keys: attention that depends strongly on where each row sits.
        writer.add_tensor(f"{prefix}.attn_q.weight", weight(N_EMBD, N_EMBD) * 3.0)
        writer.add_tensor(f"{prefix}.attn_q.bias", weight(N_EMBD))
        writer.add_tensor(f"{prefix}.attn_k.weight", weight(N_HEAD_KV * head, N_EMBD) * 3.0)
        writer.add_tensor(f"{prefix}.attn_k.bias", weight(N_HEAD_KV * head))
        writer.add_tensor(f"{prefix}.attn_v.weight", weight(N_HEAD_KV * head, N_EMBD))
        writer.add_tensor(f"{prefix}.attn_v.bias", weight(N_HEAD_KV * head))
        writer.add_tensor(f"{prefix}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.add_tensor("output.weight", weight(len(tokens), N_EMBD) * 5.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_qwen2vl_model(args.out, seed=args.seed))


if __name__ == "__main__":
    main(sys.argv[1:])
