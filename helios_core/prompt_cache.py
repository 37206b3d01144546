"""The RAM tier behind the slots: KV states of prefixes that left their slot, restored when they return.

Agent clients send the same long prefix (system prompt, tool definitions,
a growing conversation) again and again, and more conversations take
turns than there are slots. A slot about to be reused for another prefix
has its sequence's KV state copied here first (llama_state_seq_get_data),
keyed by its tokens and adapter set; admission then looks for the longest
prefix over the free slots *and* this tier, restores the winner into a
slot, and decodes only the rest.

- Bounded in bytes, least recently used out first. One entry whose tokens
  are a prefix of another's (same adapter set) is dropped: the longer one
  restores it too, since a restored sequence is cut to the shared prefix.
- Control vectors are set for the whole context, so every entry of one
  process shares them; files written to disk record them (slot_files.py).
- Sliding-window models (Gemma 3): llama.cpp saves a sequence's
  sliding-window layers only within the window of its last position, even
  with `swa_full`, so a restored entry can be extended but not cut short.
  On such a model an entry serves only prompts that hold all of its tokens
  and more, so a slot is saved as its last request's prompt, without the
  answer generated after it: the client sends that prompt again verbatim,
  while the answer comes back as it re-rendered it (reasoning stripped, tool
  calls re-serialised), which may not be the tokens generated.

Everything here runs on the engine thread, the owner of the context.
/metrics reads the counters of `stats` from other threads (plain ints).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from helios_core.context import Context
from helios_core.kvcache import CachedSequence, Span

MiB = 1024 * 1024

# llama-server's default --cache-ram is 8192 MiB: the 12-conversation agent trace over a
# 3,000-token prefix needs about 0.8 GiB on the default model (18 KiB of KV per token).
DEFAULT_CACHE_RAM_MIB = 8192

# A slot's cache is saved before reuse only when reuse would drop at least this many of its
# tokens: a conversation's next turn usually drops a few (the answer re-rendered by the
# template), which are not worth a copy of the whole state.
SAVE_MIN_DROPPED = 32

# A tier entry is restored only when it serves at least this many more prompt tokens than the
# best free slot: a restore copies the whole state, which costs about what decoding a few
# dozen tokens does on a CPU.
RESTORE_MIN_GAIN = 32

logger = logging.getLogger("helios.prompt_cache")


@dataclass
class Entry:
    """One saved sequence: its tokens, the adapter set they were read under, its state, its M-RoPE media."""

    tokens: np.ndarray  # int32
    lora: tuple
    state: bytearray
    spans: tuple[Span, ...] = ()  # where its positions part from its token indices (kvcache.Positions)

    @property
    def nbytes(self) -> int:
        return len(self.state) + self.tokens.nbytes


@dataclass
class CacheStats:
    hits: int = 0  # admissions served from the tier (a restore)
    misses: int = 0  # admissions the tier could not serve better than a slot
    tokens_restored: int = 0  # prompt tokens those restores saved from decoding
    saves: int = 0
    evictions: int = 0
    restore_failures: int = 0  # states llama.cpp refused (no room in the KV cache)
    bytes: int = 0  # held now
    entries: int = 0


class PromptCache:
    """Saved sequence states, at most `max_bytes` of them, least recently used out first."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._prompts: dict[int, Sequence[int]] = {}  # seq_id -> the prompt last admitted into it
        self._ids = iter(range(1 << 62))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[Entry]:
        """The entries, least recently used first."""
        return iter(list(self._entries.values()))

    # --- the admission hooks (engine thread) -------------------------------------------

    def admit(
        self, ctx: Context, free: Sequence[CachedSequence], chosen: CachedSequence, prompt: Sequence[int], lora: tuple
    ) -> CachedSequence:
        """The free sequence a prompt should be read into, with the tier's best prefix restored into it if that wins.

        `chosen`: the free slot's sequence the scheduler picked by prefix alone.
        Whatever sequence is returned, a long tail it is about to lose is saved here
        first; the caller then reuses it (CachedSequence.reuse) as usual.
        """
        slot_shared = min(chosen.common_prefix(prompt, lora), len(prompt) - 1)
        entry, shared = self.lookup(prompt, lora, whole=ctx.model.n_swa > 0)
        shared = min(shared, len(prompt) - 1)
        if entry is None or shared < slot_shared + RESTORE_MIN_GAIN:
            self.stats.misses += 1
            self.stash(ctx, chosen, slot_shared)
            self._prompts[chosen.seq_id] = prompt
            return chosen
        target = min(free, key=lambda seq: len(seq.tokens))  # the emptiest: the least to save first
        self.stash(ctx, target, min(target.common_prefix(prompt, lora), len(prompt) - 1))
        self._prompts[target.seq_id] = prompt
        if not self.restore(ctx, entry, target):
            return target
        self.stats.hits += 1
        self.stats.tokens_restored += shared
        return target

    def stash(self, ctx: Context, seq: CachedSequence, keep: int = 0) -> None:
        """Save a sequence's state before it is cut to `keep` tokens, if the cut drops enough to be worth it.

        On a sliding-window model the sequence is first cut back to the prompt last admitted
        into it, when it still holds that prompt (see the module's note).
        """
        if not self.max_bytes or len(seq.tokens) - keep < SAVE_MIN_DROPPED:
            return
        prompt = self._prompts.pop(seq.seq_id, None)
        if ctx.model.n_swa and prompt is not None and keep <= len(prompt) < len(seq.tokens):
            end = len(prompt)
            if seq.tokens[:end] == list(prompt):
                seq.truncate(ctx, end)
        self.save(ctx, seq)

    # --- the tier ------------------------------------------------------------------------

    def lookup(self, prompt: Sequence[int], lora: tuple = (), *, whole: bool = False) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with `prompt` under adapter set `lora`, and that length.

        whole: only entries whose every token starts the prompt, with at least one prompt token after
        them (a sliding-window model's restored state cannot be cut short).
        """
        best, best_shared = None, 0
        if not self._entries or not prompt:
            return best, best_shared
        query = np.asarray(prompt, dtype=np.int32)
        for entry in self._entries.values():
            if entry.lora != lora:
                continue
            shared = _common_prefix(entry.tokens, query)
            if whole and (shared < entry.tokens.size or shared == query.size):
                continue
            if shared > best_shared:
                best, best_shared = entry, shared
        return best, best_shared

    def save(self, ctx: Context, seq: CachedSequence) -> Entry | None:
        """Copy a sequence's state into the tier; None when it is empty, too large, or already held."""
        if not seq.tokens or not self.max_bytes:
            return None
        tokens = np.asarray(seq.tokens, dtype=np.int32)
        for key, entry in self._entries.items():
            if entry.lora == seq.lora and _common_prefix(entry.tokens, tokens) == tokens.size:
                self._entries.move_to_end(key)  # held already, as a prefix of this entry
                return None
        state = ctx.seq_state(seq.seq_id)
        return self.add(Entry(tokens, seq.lora, state, tuple(seq.positions.spans)))

    def add(self, entry: Entry) -> Entry | None:
        """Hold an entry as the most recent; drop those it makes redundant, then the least recent over the bound."""
        if entry.nbytes > self.max_bytes:
            return None
        for key in [
            key
            for key, held in self._entries.items()
            if held.lora == entry.lora and _common_prefix(held.tokens, entry.tokens) == held.tokens.size
        ]:
            self._drop(key)
        while self._entries and self.stats.bytes + entry.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.stats.evictions += 1
        self._entries[next(self._ids)] = entry
        self.stats.bytes += entry.nbytes
        self.stats.entries = len(self._entries)
        self.stats.saves += 1
        return entry

    def restore(self, ctx: Context, entry: Entry, seq: CachedSequence) -> bool:
        """Load an entry's state into a sequence, which then holds its tokens.

        False, and the sequence left empty, when llama.cpp refused it.
        """
        self.touch(entry)
        if not ctx.seq_state_set(seq.seq_id, entry.state):
            self.stats.restore_failures += 1
            logger.warning(
                "a cached prefix of %d tokens did not fit the KV cache; decoding it again", entry.tokens.size
            )
            seq.tokens.clear()
            seq.positions.spans.clear()
            return False
        seq.tokens[:] = entry.tokens.tolist()
        seq.positions.spans[:] = entry.spans
        seq.lora = entry.lora
        return True

    def touch(self, entry: Entry) -> None:
        """Mark an entry as the most recently used."""
        for key, held in self._entries.items():
            if held is entry:
                self._entries.move_to_end(key)
                return

    def clear(self) -> None:
        self._entries.clear()
        self.stats.bytes = 0
        self.stats.entries = 0

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.stats.bytes -= entry.nbytes
        self.stats.entries = len(self._entries)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n
