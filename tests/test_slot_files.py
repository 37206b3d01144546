"""Slot files (helios_core/slot_files.py): what makes a saved state valid, and files that are skipped."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from helios_core import slot_files
from helios_core.prompt_cache import Entry, PromptCache
from helios_core.slot_files import SlotFileError, Validity

HERE = Validity(model="253:abc", llama="def:state-v3", context="n_ctx_seq=1024", control_vectors="[]")


def entry(n: int = 40, first: int = 2) -> Entry:
    return Entry(np.arange(first, first + n, dtype=np.int32), (), bytearray(range(256)) * 8)


def test_a_file_reads_back_the_tokens_and_state_it_was_written_with(tmp_path):
    saved = entry()
    written = slot_files.write(tmp_path / "a.slot", saved, HERE)
    loaded = slot_files.read(tmp_path / "a.slot", HERE)
    assert written == (tmp_path / "a.slot").stat().st_size
    assert loaded.tokens.tolist() == saved.tokens.tolist() and loaded.state == saved.state and loaded.lora == ()


@pytest.mark.parametrize(
    "field, says",
    [("model", "another model"), ("llama", "another llama"), ("context", "another context")]
    + [("control_vectors", "another control vectors")],
)
def test_a_file_written_for_another_setting_is_foreign(tmp_path, field, says):
    slot_files.write(tmp_path / "a.slot", entry(), replace(HERE, **{field: "something else"}))
    with pytest.raises(SlotFileError, match=says):
        slot_files.read(tmp_path / "a.slot", HERE)


def test_a_flipped_byte_is_corrupt_and_a_short_file_truncated(tmp_path):
    path = tmp_path / "a.slot"
    slot_files.write(path, entry(), HERE)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(data)
    with pytest.raises(SlotFileError, match="corrupt"):
        slot_files.read(path, HERE)
    path.write_bytes(data[:-1])
    with pytest.raises(SlotFileError, match="truncated"):
        slot_files.read(path, HERE)
    path.write_bytes(b"GGSQ" + bytes(64))
    with pytest.raises(SlotFileError, match="not a helios slot file"):
        slot_files.read(path, HERE)


def test_a_file_read_under_an_adapter_not_loaded_is_foreign(tmp_path):
    class Adapter:
        path = "/adapters/a.gguf"

    saved = replace(entry(), lora=((Adapter(), 1.0),))
    slot_files.write(tmp_path / "a.slot", saved, HERE)
    assert slot_files.read(tmp_path / "a.slot", HERE, [Adapter()]).lora[0][1] == 1.0
    with pytest.raises(SlotFileError, match="not loaded"):
        slot_files.read(tmp_path / "a.slot", HERE, [])


def test_a_saved_tier_loads_back_in_order_skipping_bad_files_with_one_line_each(tmp_path, caplog):
    tier = PromptCache(1 << 20)
    for first in (100, 200, 300):
        tier.add(entry(first=first))
    assert slot_files.save_tier(tier, tmp_path, HERE) == 3
    (tmp_path / "000001.slot").write_bytes((tmp_path / "000001.slot").read_bytes()[:-10])
    (tmp_path / "zz-junk.slot").write_bytes(b"not a slot")
    back = PromptCache(1 << 20)
    with caplog.at_level(logging.WARNING, logger="helios.slot_files"):
        assert slot_files.load_tier(back, tmp_path, HERE) == 2
    assert [e.tokens[0] for e in back.entries()] == [100, 300]
    assert len(caplog.records) == 2 and all(r.getMessage().count("\n") == 0 for r in caplog.records)
