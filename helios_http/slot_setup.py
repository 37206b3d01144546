"""Start-up and shutdown of slot files: --slot-save-path, and --cache-persist's warm restart."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from helios_core import slot_files
from helios_core.prompt_cache import PromptCache
from helios_http.state import ServerState

logger = logging.getLogger("helios.http")

# Seconds the engine thread gets, at shutdown, to copy what the slots hold into the tier.
_STASH_SECONDS = 60.0


def prepare_slot_files(
    state: ServerState, args: argparse.Namespace, model_path: Path, cache: PromptCache | None
) -> None:
    """Set up --slot-save-path (the validity its files carry) and, with --cache-persist, read the tier back."""
    if args.slot_save_path is None:
        return
    folder = Path(args.slot_save_path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state.slot_save_path = folder
    steering = [list(getattr(args, "control_vector", []) or []), getattr(args, "control_vector_layers", None)]
    state.slot_validity = slot_files.validity(model_path, n_ctx_seq=args.ctx_size, control_vectors=steering)
    if not args.cache_persist or cache is None:
        return
    persisted = folder / "prompt-cache"
    if persisted.is_dir():
        n = slot_files.load_tier(cache, persisted, state.slot_validity, state.lora)
        logger.info("helios-engine: prompt cache: %d prefixes read from %s (%d bytes)", n, persisted, cache.stats.bytes)

    def persist() -> None:
        try:
            engine = state.engine
            if engine is not None:
                stash = engine.call(
                    lambda s: [cache.save(s.runner.ctx, slot.cache) for slot in s.slots if not slot.busy]
                )
                stash.result(_STASH_SECONDS)
            n = slot_files.save_tier(cache, persisted, state.slot_validity)
        except Exception as error:  # a full disk must not turn a clean shutdown into a crash
            logger.warning("helios-engine: prompt cache: not written to %s: %r", persisted, error)
            return
        logger.info("helios-engine: prompt cache: %d prefixes written to %s", n, persisted)

    state.persist = persist
