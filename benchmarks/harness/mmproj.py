"""Write a tiny multimodal projector (mmproj GGUF) with random weights, for tests without a vision model.

A LLaVA-style projector ("mlp"): a one-block CLIP vision tower over 32 x 32 pixels in 8 x 8
patches (16 image tokens), then a two-layer MLP out to the text model's width (640 for the
default Gemma 3 270M). libmtmd loads, resizes and encodes with it exactly as with a real one;
what it "sees" is noise, so tests check plumbing (counts, positions, logits that move, caches),
never what a model says about an image.

    python -m benchmarks.harness.mmproj OUT.gguf [--width 640] [--seed 0] [--audio] [--gemma3 | --qwen2vl]

--gemma3 writes Gemma 3's own projector type instead ("gemma3": a SigLIP-style tower, 2 x 2
average pooling, then a soft-embedding norm and a projection): libmtmd then wraps each image
in <start_of_image> ... <end_of_image> and decodes it with non-causal attention, as for the
real Gemma 3 models.

--audio adds a Qwen2-Audio-style ("qwen2a") one-block Whisper encoder beside the vision one:
libmtmd computes the log-mel frames and cuts them into 30-second windows, each AUDIO_TOKENS long.

--qwen2vl writes Qwen2-VL's projector type instead ("qwen2vl_merger", `write_qwen2vl_mmproj`): a
one-block ViT with M-RoPE over 8 x 8 patches (two patch convolutions, no position embedding),
then each 2 x 2 patches merged into one token by an MLP, 64 wide by default to match
benchmarks/harness/qwen2vl.py's tiny text model. libmtmd places its image tokens with M-RoPE: an
image of w x h merged tokens takes max(w, h) positions (a 64 x 32 PNG: 8 tokens, 4 positions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2
VISION_WIDTH = 32
VISION_FF = 64
VISION_HEADS = 2
PROJECTOR_HIDDEN = 64
GEMMA3_POOL = 2  # --gemma3: the tower sees twice the side, then pools each 2 x 2 patches into one token
MEL_BINS = 128
AUDIO_POSITIONS = 1500  # Whisper's 3,000 mel frames of a 30-second window, halved by its second conv
AUDIO_TOKENS = AUDIO_POSITIONS // 2  # then average-pooled by 2
QWEN2VL_MERGE = 2  # Qwen2-VL merges each 2 x 2 patches into one token
QWEN2VL_WIDTH = 64  # benchmarks/harness/qwen2vl.py's n_embd


def write_mmproj(
    path: str | Path,
    text_width: int = 640,
    *,
    seed: int = 0,
    std: float = 0.05,
    audio: bool = False,
    gemma3: bool = False,
) -> Path:
    """A random "mlp" projector whose output width is `text_width` (with `audio`, a "qwen2a" encoder too)."""
    writer, weight = _open(path, "helios tiny random projector", seed, std)
    kind = "gemma3" if gemma3 else "mlp"
    if audio:  # each modality names its own projector type
        writer.add_string("clip.vision.projector_type", kind)
        _add_audio(writer, weight, text_width)
    else:
        writer.add_string("clip.projector_type", kind)
    side = IMAGE_SIZE * GEMMA3_POOL if gemma3 else IMAGE_SIZE  # pooled back to TOKENS_PER_IMAGE
    # The llava graph reads the second-to-last block: two blocks, so one runs.
    _add_vision_sizes(writer, side, 2, text_width)
    # numpy shapes are ggml's ne reversed: a linear layer is (n_out, n_in).
    # Strong enough that two colours land far apart in the text model's logits.
    writer.add_tensor("v.patch_embd.weight", weight(VISION_WIDTH, 3, PATCH_SIZE, PATCH_SIZE) * 10.0)
    writer.add_tensor("v.patch_embd.bias", weight(VISION_WIDTH))
    writer.add_tensor("v.position_embd.weight", weight((side // PATCH_SIZE) ** 2, VISION_WIDTH))
    for block in range(2):
        _add_block(writer, weight, f"v.blk.{block}", k_bias=True)
    if gemma3:
        writer.add_uint32("clip.vision.projector.scale_factor", GEMMA3_POOL)
        writer.add_tensor("mm.soft_emb_norm.weight", np.ones(VISION_WIDTH, dtype=np.float32))
        # (vision width, text width): the graph multiplies by its transpose.
        writer.add_tensor("mm.input_projection.weight", weight(VISION_WIDTH, text_width) * 20.0)
    else:
        _add_mlp(writer, weight, VISION_WIDTH, text_width)
    return _close(writer, path)


def write_qwen2vl_mmproj(
    path: str | Path, text_width: int = QWEN2VL_WIDTH, *, seed: int = 0, std: float = 0.05
) -> Path:
    """A random "qwen2vl_merger" projector whose output width is `text_width`: images placed with M-RoPE."""
    writer, weight = _open(path, "helios tiny random qwen2vl projector", seed, std)
    writer.add_string("clip.projector_type", "qwen2vl_merger")
    writer.add_uint32("clip.vision.spatial_merge_size", QWEN2VL_MERGE)
    _add_vision_sizes(writer, IMAGE_SIZE * QWEN2VL_MERGE, 1, text_width)
    # Two convolutions over the same frame (Qwen2-VL's temporal patch of 2, a still image twice), no bias.
    writer.add_tensor("v.patch_embd.weight", weight(VISION_WIDTH, 3, PATCH_SIZE, PATCH_SIZE) * 10.0)
    writer.add_tensor("v.patch_embd.weight.1", weight(VISION_WIDTH, 3, PATCH_SIZE, PATCH_SIZE) * 10.0)
    _add_block(writer, weight, "v.blk.0", k_bias=True)
    _add_mlp(writer, weight, VISION_WIDTH * QWEN2VL_MERGE * QWEN2VL_MERGE, text_width)  # over 2 x 2 merged patches
    return _close(writer, path)


def _open(path: str | Path, name: str, seed: int, std: float):
    """A projector GGUF writer with a vision encoder, and the random weight(*shape) its tensors draw from."""
    import gguf

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", name)
    writer.add_bool("clip.has_vision_encoder", True)
    return writer, weight


def _add_vision_sizes(writer, side: int, blocks: int, text_width: int) -> None:
    writer.add_uint32("clip.vision.image_size", side)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    _add_encoder_sizes(writer, "vision", blocks, text_width)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)


def _add_mlp(writer, weight, n_in: int, text_width: int) -> None:
    """The two-layer GELU MLP out to the text model's width."""
    writer.add_tensor("mm.0.weight", weight(PROJECTOR_HIDDEN, n_in))
    writer.add_tensor("mm.0.bias", weight(PROJECTOR_HIDDEN))
    # Large enough that two images move the text model's logits measurably.
    writer.add_tensor("mm.2.weight", weight(text_width, PROJECTOR_HIDDEN) * 20.0)
    writer.add_tensor("mm.2.bias", weight(text_width))


def _close(writer, path: str | Path) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_audio(writer, weight, text_width: int) -> None:
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_string("clip.audio.projector_type", "qwen2a")
    writer.add_uint32("clip.audio.num_mel_bins", MEL_BINS)
    _add_encoder_sizes(writer, "audio", 1, text_width)
    # Whisper's convolutions are float16 in every converted model: ggml's im2col path expects it.
    writer.add_tensor("a.conv1d.1.weight", (weight(VISION_WIDTH, MEL_BINS, 3) * 10.0).astype(np.float16))
    writer.add_tensor("a.conv1d.1.bias", weight(VISION_WIDTH, 1))  # (channels, 1): added along time
    writer.add_tensor("a.conv1d.2.weight", weight(VISION_WIDTH, VISION_WIDTH, 3).astype(np.float16))
    writer.add_tensor("a.conv1d.2.bias", weight(VISION_WIDTH, 1))
    writer.add_tensor("a.position_embd.weight", weight(AUDIO_POSITIONS, VISION_WIDTH))
    _add_block(writer, weight, "a.blk.0", k_bias=False)  # Whisper's k has no bias
    writer.add_tensor("mm.a.fc.weight", weight(text_width, VISION_WIDTH) * 20.0)
    writer.add_tensor("mm.a.fc.bias", weight(text_width))


def _add_encoder_sizes(writer, modality: str, blocks: int, text_width: int) -> None:
    writer.add_uint32(f"clip.{modality}.embedding_length", VISION_WIDTH)
    writer.add_uint32(f"clip.{modality}.feed_forward_length", VISION_FF)
    writer.add_uint32(f"clip.{modality}.attention.head_count", VISION_HEADS)
    writer.add_uint32(f"clip.{modality}.block_count", blocks)
    writer.add_uint32(f"clip.{modality}.projection_dim", text_width)
    writer.add_float32(f"clip.{modality}.attention.layer_norm_epsilon", 1e-5)


def _add_block(writer, weight, prefix: str, *, k_bias: bool) -> None:
    """One pre-norm transformer block of the encoder: attention, then a GELU MLP."""
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        writer.add_tensor(f"{prefix}.{name}.weight", weight(VISION_WIDTH, VISION_WIDTH))
        if name != "attn_k" or k_bias:
            writer.add_tensor(f"{prefix}.{name}.bias", weight(VISION_WIDTH))
    for name in ("ln1", "ln2"):
        writer.add_tensor(f"{prefix}.{name}.weight", np.ones(VISION_WIDTH, dtype=np.float32))
        writer.add_tensor(f"{prefix}.{name}.bias", np.zeros(VISION_WIDTH, dtype=np.float32))
    writer.add_tensor(f"{prefix}.ffn_up.weight", weight(VISION_FF, VISION_WIDTH))
    writer.add_tensor(f"{prefix}.ffn_up.bias", weight(VISION_FF))
    writer.add_tensor(f"{prefix}.ffn_down.weight", weight(VISION_WIDTH, VISION_FF))
    writer.add_tensor(f"{prefix}.ffn_down.bias", weight(VISION_WIDTH))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=None, help="the text n_embd (640; 64 with --qwen2vl)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--audio", action="store_true", help="an audio encoder too")
    parser.add_argument("--gemma3", action="store_true", help="Gemma 3's projector type (non-causal images)")
    parser.add_argument("--qwen2vl", action="store_true", help="Qwen2-VL's projector type (M-RoPE images)")
    args = parser.parse_args(argv)
    if args.qwen2vl:
        print(write_qwen2vl_mmproj(args.out, args.width or QWEN2VL_WIDTH, seed=args.seed))
    else:
        print(write_mmproj(args.out, args.width or 640, seed=args.seed, audio=args.audio, gemma3=args.gemma3))


if __name__ == "__main__":
    main(sys.argv[1:])
