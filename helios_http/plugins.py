"""Plug-in samplers and logits processors, served by name.

    helios-engine serve --sampler typical=my_samplers:typical --processor lipogram=my_samplers:lipogram

A plug-in is a *factory*: `factory(model, **args)` returns a Sampler (or a
LogitsProcessor) for one generation. It is called once per generation, so a
sampler that keeps state from token to token (mirostat's running estimate)
keeps it for its own sequence only, under continuous batching too. `model` is
the served helios_core Model (its vocabulary, for a processor that bans tokens
by their text); `args` are the request's `sampler_args` (or a processor's
`args`).

A request picks them with OpenAI-style extra fields:

    {"sampler": "typical", "sampler_args": {"p": 0.9},
     "processors": ["lipogram", {"name": "lipogram", "args": {"letter": "a"}}]}

The sampler replaces the built-in chain (temperature, top_p, ... are then the
plug-in's business); the built-in penalties, logit_bias and any constraint still
apply, and processors run after the built-in ones, in the order given. An
unknown name, or arguments the factory refuses (TypeError or ValueError), is a
400 naming the field. Packages may also offer plug-ins through the Python entry
point groups `helios_engine.samplers` and `helios_engine.processors`.

`--default-plugins '{"sampler": "typical"}'` gives the same fields to every
request that does not name them, on every route: clients that send only their
API's own fields (Claude Code, Codex, a chat UI) then run through a plug-in too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_core.sampling import Sampler
from helios_http.errors import APIError, invalid

log = logging.getLogger("helios.http")

SAMPLER_GROUP = "helios_engine.samplers"
PROCESSOR_GROUP = "helios_engine.processors"
MAX_PROCESSORS = 16

Factory = Callable[..., Any]


class PluginError(HeliosError):
    """A --sampler/--processor option or entry point that names nothing importable."""


@dataclass(frozen=True)
class PluginUse:
    """One plug-in a request names, with the keyword arguments for its factory."""

    name: str
    args: Mapping[str, Any]
    param: str  # the request field, for errors: "sampler" or "processors[1]"


@dataclass(frozen=True)
class PluginRequest:
    """The plug-ins one request asks for (shape checked; names are checked against the server's).

    None where the request does not name that field: the server's --default-plugins then stand.
    """

    sampler: PluginUse | None = None
    processors: tuple[PluginUse, ...] | None = None


def requested(body: Mapping[str, Any]) -> PluginRequest | None:
    """The request's `sampler`, `sampler_args` and `processors` fields; None when it names no plug-in."""
    sampler_name = body.get("sampler")
    sampler_args = body.get("sampler_args")
    processors = body.get("processors")
    if sampler_name is None and processors is None:
        if sampler_args is not None:
            raise invalid("sampler_args needs a sampler to pass them to", "sampler_args")
        return None
    sampler = None
    if sampler_name is not None:
        if not isinstance(sampler_name, str) or not sampler_name:
            raise invalid("sampler must be the name of a sampler this server was started with", "sampler")
        sampler = PluginUse(sampler_name, _arguments(sampler_args, "sampler_args"), "sampler")
    elif sampler_args is not None:
        raise invalid("sampler_args needs a sampler to pass them to", "sampler_args")
    uses: list[PluginUse] | None = None
    if processors is not None:
        uses = []
        if not isinstance(processors, list) or len(processors) > MAX_PROCESSORS:
            raise invalid(
                f"processors must be a list of at most {MAX_PROCESSORS} names or {{name, args}} objects", "processors"
            )
        for i, entry in enumerate(processors):
            param = f"processors[{i}]"
            if isinstance(entry, str) and entry:
                uses.append(PluginUse(entry, {}, param))
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
                uses.append(PluginUse(entry["name"], _arguments(entry.get("args"), f"{param}.args"), param))
            else:
                raise invalid(f'{param} must be a processor name or {{"name": ..., "args": {{...}}}}', param)
    return PluginRequest(sampler, None if uses is None else tuple(uses))


def _arguments(value: Any, param: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{param} must be an object of keyword arguments", param)
    return value


@dataclass
class Plugins:
    """The server's plug-ins by name: from --sampler/--processor options and from entry points.

    defaults: what a request gets that names no plug-in (--default-plugins), so clients that
    cannot send helios's fields (Claude Code, Codex, a chat UI) still run through them.
    """

    samplers: dict[str, Factory] = field(default_factory=dict)
    processors: dict[str, Factory] = field(default_factory=dict)
    defaults: PluginRequest | None = None

    @classmethod
    def load(cls, sampler_specs: list[str] = (), processor_specs: list[str] = (), entry_points: bool = True) -> Plugins:
        """Import every plug-in now, so a typo fails at start-up with one line, not on the first request.

        Options win over entry points of the same name. Their modules are looked up in the working
        directory first, as `python -m helios_cli serve` and uvicorn's own app loading do.
        """
        plugins = cls()
        if (sampler_specs or processor_specs) and os.getcwd() not in sys.path:
            # First, as `python -m` puts it: the same spec then finds the same module either way.
            sys.path.insert(0, os.getcwd())
        if entry_points:
            for kind, group in (("samplers", SAMPLER_GROUP), ("processors", PROCESSOR_GROUP)):
                for point in importlib.metadata.entry_points(group=group):
                    try:
                        getattr(plugins, kind)[point.name] = _callable(point.load(), f"entry point {point.value}")
                    except Exception as error:  # a broken installed package must not stop the server
                        log.warning("skipping %s plug-in %r (%s): %s", group, point.name, point.value, error)
        for kind, specs, option in (
            ("samplers", sampler_specs, "--sampler"),
            ("processors", processor_specs, "--processor"),
        ):
            for spec in specs:
                name, factory = parse_spec(spec, option)
                getattr(plugins, kind)[name] = factory
        return plugins

    def set_defaults(self, body: Any) -> None:
        """--default-plugins: a JSON object of the request fields, checked now; PluginError with one line."""
        option = "--default-plugins"
        if not isinstance(body, dict) or not body or set(body) - {"sampler", "sampler_args", "processors"}:
            raise PluginError(f'{option} must be a JSON object of "sampler", "sampler_args" and "processors"')
        try:
            defaults = requested(body)
            if defaults is None:  # {"sampler": null}
                raise PluginError(f"{option} names no sampler and no processors")
            self.check(defaults)
        except APIError as error:
            raise PluginError(f"{option}: {error.message}") from None
        self.defaults = defaults

    def check_default_arguments(self, model: Model) -> None:
        """Make the defaults once for the served model: PluginError with one line if a factory refuses them."""
        if self.defaults is not None:
            try:
                self.instantiate(None, model, 1)
            except APIError as error:
                raise PluginError(f"--default-plugins: {error.message}") from None

    def check(self, request: PluginRequest) -> None:
        """A 400 (APIError) for a name this server does not have."""
        if request.sampler is not None:
            _known(self.samplers, request.sampler, "sampler")
        for use in request.processors or ():
            _known(self.processors, use, "processor")

    def instantiate(self, request: PluginRequest | None, model: Model, count: int) -> list[tuple[Sampler | None, list]]:
        """(sampler, processors) for each of `count` generations: every one owns what its factories made.

        The request's fields, or for a field it does not name, the server's defaults. Raises a 400
        (APIError) for an unknown name or arguments a factory refuses. Factories may take a while
        (a processor scanning the vocabulary): call this off the event loop.
        """
        sampler, processors = self._chosen(request)
        if sampler is None and not processors:
            return [(None, [])] * count
        if request is not None:
            self.check(request)
        return [
            (
                None if sampler is None else _make(self.samplers, sampler, model),
                [_make(self.processors, use, model) for use in processors],
            )
            for _ in range(count)
        ]

    def _chosen(self, request: PluginRequest | None) -> tuple[PluginUse | None, tuple[PluginUse, ...]]:
        defaults = self.defaults or PluginRequest()
        request = request or PluginRequest()
        sampler = request.sampler or defaults.sampler
        processors = request.processors if request.processors is not None else defaults.processors
        return sampler, processors or ()

    def names(self) -> dict[str, list[str]]:
        return {"samplers": sorted(self.samplers), "processors": sorted(self.processors)}

    def describe(self) -> dict[str, Any]:
        """The names served and the defaults, in the request fields' shape (GET /props)."""
        defaults: dict[str, Any] | None = None
        if self.defaults is not None:
            sampler, processors = self.defaults.sampler, self.defaults.processors
            defaults = {}
            if sampler is not None:
                defaults.update(sampler=sampler.name, sampler_args=dict(sampler.args))
            if processors is not None:
                defaults["processors"] = [{"name": use.name, "args": dict(use.args)} for use in processors]
        return {**self.names(), "defaults": defaults}


def parse_spec(spec: str, option: str) -> tuple[str, Factory]:
    """NAME=package.module:callable -> (NAME, the callable), or PluginError with one line."""
    name, sep, target = spec.partition("=")
    module_name, colon, attribute = target.partition(":")
    if not sep or not name or not colon or not module_name or not attribute:
        raise PluginError(f"{option} {spec!r}: expected NAME=package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise PluginError(f"{option} {spec!r}: cannot import {module_name}: {error}") from None
    found: Any = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise PluginError(f"{option} {spec!r}: {module_name} has no {attribute}")
    return name, _callable(found, f"{option} {spec!r}")


def _callable(found: Any, where: str) -> Factory:
    if not callable(found):
        raise PluginError(f"{where}: {type(found).__name__} object is not callable")
    return found


def _known(registry: Mapping[str, Factory], use: PluginUse, kind: str) -> None:
    if use.name not in registry:
        offered = ", ".join(sorted(registry)) or "none"
        raise invalid(f"this server has no {kind} named {use.name!r} (it has: {offered})", use.param)


def _make(registry: Mapping[str, Factory], use: PluginUse, model: Model):
    try:
        made = registry[use.name](model, **use.args)
    except (TypeError, ValueError) as error:
        param = "sampler_args" if use.param == "sampler" else f"{use.param}.args"
        raise invalid(f"{use.name} refused its arguments: {error}", param) from None
    if not callable(made):
        raise invalid(f"{use.name}'s factory returned {type(made).__name__}, not a callable", use.param)
    return made
