"""Model specs resolve to files without touching a model hub."""

from __future__ import annotations

import pytest

from helios_core import resolve
from helios_core.errors import ModelNotFoundError


def test_no_spec_means_the_embedded_default_model():
    path = resolve.resolve_model(None)
    assert path.name == resolve.DEFAULT_MODEL_FILE
    assert resolve._sha256(path) == resolve.DEFAULT_MODEL_SHA256


def test_a_local_path_resolves_to_itself(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve.resolve_model(str(f)) == f


def test_a_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve.resolve_model(str(tmp_path / "nope.gguf"))


def _fake_hub_cache(root, repo_id: str, filename: str, data: bytes) -> None:
    """Lay out a file exactly as huggingface_hub's cache stores a download."""
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(data)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_hub_spec_resolves_from_the_cache_when_offline(offline_hub):
    _fake_hub_cache(offline_hub, "someone/tiny-GGUF", "tiny.gguf", b"GGUF-test")
    path = resolve.resolve_model("someone/tiny-GGUF:tiny.gguf")
    assert path.read_bytes() == b"GGUF-test"


def test_hub_spec_absent_from_the_cache_when_offline_is_a_clear_error(offline_hub):
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve.resolve_model("someone/absent-GGUF:absent.gguf")


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """A "hub" on loopback port 9, where nothing listens, and a record of how resolve asked for files."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    asked = []
    download = huggingface_hub.hf_hub_download

    def recording(*args, **kwargs):
        asked.append(kwargs.get("local_files_only"))
        return download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
    return tmp_path, asked


def test_hub_spec_absent_when_the_hub_is_unreachable_is_one_line_without_retries(unreachable_hub):
    _, asked = unreachable_hub
    with pytest.raises(
        ModelNotFoundError,
        match=r"not in the Hugging Face cache and the hub \(http://127.0.0.1:9\) "
        r"is unreachable",
    ):
        resolve.resolve_model("someone/absent-GGUF:absent.gguf")
    # Only the cache was asked: huggingface_hub's network path (and its ~23 s of retries) never ran.
    assert asked == [True]


def test_hub_spec_in_the_cache_resolves_when_the_hub_is_unreachable(unreachable_hub):
    cache, asked = unreachable_hub
    _fake_hub_cache(cache, "someone/tiny-GGUF", "tiny.gguf", b"GGUF-test")
    assert resolve.resolve_model("someone/tiny-GGUF:tiny.gguf").read_bytes() == b"GGUF-test"
    assert asked == [True]
