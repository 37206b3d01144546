"""What the handlers share: the server's state, and the answer while the model is not ready.

`build_app(state)` (app.py) puts a ServerState on `app.state.helios`; every handler reads it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helios_core.backend import Device
from helios_core.embedding_worker import EmbeddingWorker
from helios_core.engine import Engine
from helios_core.lora import Adapter
from helios_core.model import Model
from helios_core.reasoning import ReasoningFormat
from helios_core.runtime import Runtime
from helios_core.slot_files import Validity
from helios_http.errors import APIError
from helios_http.limits import MiB
from helios_http.media import MediaServing
from helios_http.metrics import Metrics
from helios_http.model_names import ModelNames
from helios_http.plugins import PluginError, Plugins
from helios_http.responses_store import ResponseStore

RETRY_AFTER_SECONDS = 1


@dataclass
class ServerState:
    """What the handlers share. `engine` is None until the model has loaded."""

    model_id: str
    api_key: str | None = None
    metrics_public: bool = False  # /metrics without the API key
    chat_template: str | None = None  # a name or template text; None: chosen from the model
    reasoning_format: str = "auto"  # --reasoning-format, resolved into `reasoning` once the model loads
    reasoning: ReasoningFormat | None = None  # how the served model writes its reasoning; None: it does not
    reasoning_budget: int = -1  # --reasoning-budget: a chat request's thinking budget unless it names one
    max_body_bytes: int = 8 * MiB
    request_timeout: float = 30.0  # seconds for a request's body to arrive (headers: connections.py)
    runtime: Runtime = field(default_factory=Runtime)  # owns model, context, engine, ...; closed last (lifecycle.py)
    model: Model | None = None
    engine: Engine | None = None
    embeddings: EmbeddingWorker | None = None  # /v1/embeddings' context and thread, set with the engine
    load_error: Exception | str | None = None  # why loading failed (lifecycle.py); see load_failure
    draining: bool = False  # shutting down: new requests get 503
    metrics: Metrics = field(default_factory=Metrics)
    plugins: Plugins = field(default_factory=Plugins)  # --sampler / --processor and entry points
    cors_origins: list[str] = field(default_factory=list)  # --cors-origin: browser origins allowed to call
    devices: list[Device] = field(default_factory=list)  # where the model's layers are, as listed at load
    cpu_build: dict | None = None  # the CPU variant in use and what faulted (cpu_variant.Verdict), at load
    # --lora's adapters, loaded with the model; a request names one by its index (its id) or by name
    # (model "BASE:NAME"). lora_scales: the scales a request that names none runs at (POST /lora-adapters).
    lora: list[Adapter] = field(default_factory=list)
    lora_scales: list[float] = field(default_factory=list)
    responses: ResponseStore = field(default_factory=ResponseStore)  # stored /v1/responses (--responses-store-max)
    n_predict: int = -1  # tokens a request without a limit of its own may generate; -1: no bound (--n-predict)
    slot_save_path: Path | None = None  # --slot-save-path: where POST /slots/{id} saves and restores (slots_api.py)
    slot_validity: Validity | None = None  # what a slot file must match to be loaded here (slot_files.py)
    persist: Callable[[], None] | None = None  # --cache-persist: writes the tier, after the drain, before close
    model_names: ModelNames = field(default_factory=ModelNames)  # --model-alias, and names that fall back
    media: MediaServing = field(default_factory=MediaServing)  # --mmproj's projector, --media-path, the limits

    def ready_engine(self) -> tuple[Model, Engine]:
        if self.engine is None or self.model is None:
            raise loading_error(self)
        return self.model, self.engine


def load_failure(error: Exception | str) -> str:
    """Why loading failed, in a sentence: a start-up option's own message (--default-plugins
    arguments its factory refused once the model was there), else the model's error."""
    return str(error) if isinstance(error, PluginError) else f"the model failed to load: {error}"


def loading_error(state: ServerState) -> APIError:
    if state.load_error:
        return APIError(503, load_failure(state.load_error), type="server_error", code="model_load_failed")
    return APIError(
        503,
        "the model is loading; retry shortly",
        type="service_unavailable",
        code="model_loading",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
