"""Model names clients send, mapped onto the one model served: --model-alias NAME=SERVED.

Agent clients name their vendor's models: Claude Code sends claude-... names, and others for its
background requests. An alias maps a name (a glob: `claude-*`) to a served name, the model's id or
"ID:ADAPTER" for a LoRA adapter; the first alias that matches wins, on every route (lora_api's
request_set reads it for OpenAI's). On /v1/messages a name that is neither an alias nor served falls
back to the model, since this server serves one; each such name is logged once.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable

logger = logging.getLogger("helios.http")


def parse_alias(spec: str) -> tuple[str, str]:
    """NAME=SERVED as (pattern, served name); ValueError says what is wrong."""
    name, sep, served = spec.partition("=")
    if not sep or not name.strip() or not served.strip():
        raise ValueError(f"takes NAME=SERVED (NAME may hold * globs); got {spec!r}")
    return name.strip(), served.strip()


class ModelNames:
    """What a request's model name means here: the aliases (pattern, served name), in order."""

    def __init__(self, aliases: Iterable[tuple[str, str]] = ()):
        self.aliases = list(aliases)
        self._fallen_back: set[str] = set()

    def mapped(self, name: str, served: list[str]) -> str | None:
        """`name` when it is served, else the served name the first alias matching it maps it to, else None.

        A served name is never aliased away, so `*=ID:ADAPTER` still lets a client name ID itself."""
        if name in served:
            return name
        for pattern, target in self.aliases:
            if fnmatch.fnmatchcase(name, pattern):
                return target
        return None

    def resolve(self, name: object, served: list[str]) -> str:
        """The served name a request's model name stands for; for any other name, served[0], the model's id.

        served: the names the server answers to, the model's id first (what /v1/models lists)."""
        if not isinstance(name, str) or not name:
            return served[0]
        target = self.mapped(name, served)
        if target is not None:
            return target
        if name not in self._fallen_back:
            self._fallen_back.add(name)
            logger.info(
                "model %r is not served here: %s answers it (once per name in this log; --model-alias maps names)",
                name,
                served[0],
            )
        return served[0]
