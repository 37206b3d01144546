"""The one table of sampling settings: GenerationParams, the request parser and the CLI agree on every row."""

from __future__ import annotations

import pytest

from helios_cli.generate import generation_params
from helios_cli.main import build_parser
from helios_core.generate import GenerationParams
from helios_core.sampling.params import SETTINGS, Setting
from helios_http.errors import APIError
from helios_http.schemas import parse_completion

NAMES = [row.name for row in SETTINGS]


def allowed(row: Setting):
    """A value inside the row's bounds that is not its default, where there is one."""
    if row.choices:
        return next(c for c in row.choices if c != row.default)
    if row.default is None:
        return 7
    low = row.low if row.low is not None else row.default
    high = row.high if row.high is not None else low + 10
    value = (low + high) / 2
    if value == row.default:
        value = (value + high) / 2
    return int(value) if row.kind is int else value


def refused(row: Setting):
    """A value just outside the row's bounds."""
    if row.choices:
        return max(row.choices) + 1
    if row.high is not None:
        return row.high + 1
    return row.low if row.low_open else row.low - 1


BOUNDED = [row for row in SETTINGS if row.default is not None]


def served(name: str, value) -> GenerationParams:
    return parse_completion({"prompt": "hi", name: value}).sampling.params(n_vocab=10)


def from_cli(*argv: str) -> GenerationParams:
    return generation_params(build_parser().parse_args(["generate", "--prompt", "hi", *argv]))


@pytest.mark.parametrize("row", SETTINGS, ids=NAMES)
def test_generation_params_defaults_are_the_tables(row):
    assert getattr(GenerationParams(), row.name) == row.default


@pytest.mark.parametrize("row", SETTINGS, ids=NAMES)
def test_every_request_name_and_the_flag_set_the_same_value(row):
    value = allowed(row)
    for name in row.request:
        assert getattr(served(name, value), row.name) == value
    assert getattr(from_cli(row.flags[0], str(value)), row.name) == value
    assert getattr(GenerationParams(**{row.name: value}), row.name) == value


@pytest.mark.parametrize("row", BOUNDED, ids=[row.name for row in BOUNDED])
def test_a_value_outside_the_bounds_is_refused_alike_naming_the_field(row):
    bad = refused(row)
    for name in row.request:
        with pytest.raises(APIError) as error:
            served(name, bad)
        assert error.value.status == 400 and error.value.param == name
    with pytest.raises(ValueError, match=f"^{row.flags[0]}: {row.name} must be"):
        from_cli(row.flags[0], str(bad))
    with pytest.raises(ValueError, match=f"^{row.name} must be"):
        GenerationParams(**{row.name: bad})


@pytest.mark.parametrize("row", SETTINGS, ids=NAMES)
def test_every_flag_shows_the_tables_default_and_help(row):
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]  # argparse keeps sub-commands here
    action = next(a for a in generate._actions if a.dest == row.name)
    assert tuple(action.option_strings) == row.flags
    assert action.default == row.default and action.help == row.help


def test_top_p_zero_is_greedy_on_every_surface():
    for params in (served("top_p", 0), from_cli("--top-p", "0"), GenerationParams(top_p=0)):
        assert (params.temperature, params.top_p) == (0.0, 1.0)


def test_an_integer_setting_refuses_a_fraction():
    with pytest.raises(ValueError, match="top_k must be an integer"):
        GenerationParams(top_k=2.5)
