"""Server metrics in Prometheus' text format, for GET /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter

from helios_http.prompt_cache_metrics import prompt_cache_metrics


class Metrics:
    """Counters the HTTP layer updates; gauges are read from the engine when scraped."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (path, status) -> count
        self.in_flight = 0
        self.started = time.time()
        self.embedding_inputs = 0  # /v1/embeddings: inputs and their tokens embedded
        self.embedding_tokens = 0

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_finished(self, path: str, status: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(path, status)] += 1

    def embedded(self, inputs: int, tokens: int) -> None:
        with self._lock:
            self.embedding_inputs += inputs
            self.embedding_tokens += tokens

    def render(self, engine, devices=()) -> str:
        """The metrics text; devices: backend.Device list (their memory as listed at load)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP helios_{name} {help_}")
            lines.append(f"# TYPE helios_{name} {kind}")
            for labels, value in samples:
                lines.append(
                    f"helios_{name}{labels} {value:g}" if isinstance(value, float) else f"helios_{name}{labels} {value}"
                )

        with self._lock:
            requests = sorted(self.requests.items())
            in_flight = self.in_flight
            embedded = self.embedding_inputs, self.embedding_tokens
        metric(
            "requests_total",
            "counter",
            "HTTP requests by path and status.",
            [(f'{{path="{path}",status="{status}"}}', n) for (path, status), n in requests],
        )
        metric("requests_in_flight", "gauge", "HTTP requests being served now.", [("", in_flight)])
        metric("embedding_inputs_total", "counter", "Inputs embedded by /v1/embeddings.", [("", embedded[0])])
        metric("embedding_tokens_total", "counter", "Tokens embedded by /v1/embeddings.", [("", embedded[1])])
        if engine is not None:
            stats = engine.scheduler.stats
            busy_seconds = max(stats.busy_seconds, 1e-9)
            metric("requests_queued", "gauge", "Generation requests waiting for a slot.", [("", engine.queued)])
            metric("slots_busy", "gauge", "Slots generating or reading a prompt.", [("", engine.busy_slots)])
            metric("slots_total", "gauge", "Slots (sequences decoded together).", [("", engine.n_slots)])
            metric(
                "prompt_tokens_total",
                "counter",
                "Prompt tokens decoded (cache hits excluded).",
                [("", stats.prompt_tokens_decoded)],
            )
            metric("generated_tokens_total", "counter", "Tokens generated.", [("", stats.generated_tokens)])
            metric(
                "reasoning_tokens_total",
                "counter",
                "Of the tokens generated, those of finished answers' reasoning sections.",
                [("", stats.reasoning_tokens)],
            )
            metric(
                "tokens_per_second",
                "gauge",
                "Generated tokens per second of engine busy time.",
                [("", float(stats.generated_tokens / busy_seconds))],
            )
            metric(
                "prompt_cache_hits_total",
                "counter",
                "Requests that found part of their prompt cached.",
                [("", stats.cache_hits)],
            )
            metric(
                "prompt_cache_tokens_total",
                "counter",
                "Prompt tokens served from the KV cache.",
                [("", stats.cached_tokens)],
            )
            tier = getattr(engine, "prompt_cache", None)  # None: --cache-ram 0 (or a test's fake engine)
            if tier is not None:
                prompt_cache_metrics(metric, tier.stats)
            metric("decode_steps_total", "counter", "llama_decode calls.", [("", stats.steps)])
            metric(
                "batch_tokens_total",
                "counter",
                "Tokens over all decode steps (mean batch = this / steps).",
                [("", stats.batch_tokens)],
            )
            metric(
                "batch_sequences_total", "counter", "Sequences over all decode steps.", [("", stats.batch_sequences)]
            )
            metric("draft_tokens_total", "counter", "Speculative decoding: tokens drafted.", [("", stats.draft_tokens)])
            metric(
                "draft_tokens_accepted_total",
                "counter",
                "Speculative decoding: drafted tokens the model agreed with, kept without a step of their own.",
                [("", stats.draft_accepted)],
            )
            metric(
                "draft_acceptance_rate",
                "gauge",
                "Speculative decoding: accepted / drafted tokens so far (0 before any draft).",
                [("", stats.draft_accepted / stats.draft_tokens if stats.draft_tokens else 0.0)],
            )
        if devices:
            labels = [f'{{device="{d.name}",description="{d.description}",kind="{d.kind}"}}' for d in devices]
            metric(
                "device_memory_free_bytes",
                "gauge",
                "Free memory of each device the model may use, at load.",
                [(label, d.memory_free) for label, d in zip(labels, devices, strict=True)],
            )
            metric(
                "device_memory_total_bytes",
                "gauge",
                "Total memory of each device the model may use.",
                [(label, d.memory_total) for label, d in zip(labels, devices, strict=True)],
            )
        return "\n".join(lines) + "\n"
