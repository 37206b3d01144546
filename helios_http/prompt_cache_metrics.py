"""/metrics lines of the prompt cache's RAM tier (helios_core.prompt_cache)."""

from __future__ import annotations

from collections.abc import Callable

# (metric name, kind, help, CacheStats field)
_LINES = (
    ("hits_total", "counter", "Requests whose prefix was restored from the RAM tier.", "hits"),
    ("misses_total", "counter", "Requests the RAM tier held no longer prefix for than their slot.", "misses"),
    ("tokens_restored_total", "counter", "Prompt tokens restored from the RAM tier, not decoded.", "tokens_restored"),
    ("saves_total", "counter", "Slot states saved to the RAM tier.", "saves"),
    ("evictions_total", "counter", "Entries dropped to keep the RAM tier within --cache-ram.", "evictions"),
    (
        "restore_failures_total",
        "counter",
        "Restores llama.cpp refused (no room in the KV cache); their prompts were decoded.",
        "restore_failures",
    ),
    ("bytes", "gauge", "Bytes of KV state the RAM tier holds.", "bytes"),
    ("entries", "gauge", "Prefixes the RAM tier holds.", "entries"),
)


def prompt_cache_metrics(metric: Callable, stats) -> None:
    """Add the tier's counters and gauges (helios_prompt_cache_tier_*) through Metrics.render's `metric`."""
    for name, kind, help_, field in _LINES:
        metric(f"prompt_cache_tier_{name}", kind, help_, [("", getattr(stats, field))])
