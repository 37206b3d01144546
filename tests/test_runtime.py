"""Runtime closes what it owns last-opened first, once, and a failing close does not leak the rest."""

from __future__ import annotations

import logging

from helios_core.runtime import Runtime


class Thing:
    def __init__(self, name: str, closed: list[str], fails: bool = False):
        self.name, self.closed, self.fails = name, closed, fails

    def close(self) -> None:
        self.closed.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} would not close")


def test_closes_last_opened_first_and_only_once():
    closed: list[str] = []
    runtime = Runtime()
    model = runtime.own(Thing("model", closed))
    runtime.own(Thing("context", closed))
    runtime.own(Thing("engine", closed))
    assert model.name == "model"  # own() hands the object back
    runtime.close()
    runtime.close()
    assert closed == ["engine", "context", "model"]


def test_a_failing_close_is_logged_and_the_rest_still_close(caplog):
    closed: list[str] = []
    with caplog.at_level(logging.ERROR, logger="helios.runtime"), Runtime() as runtime:
        runtime.own(Thing("model", closed))
        runtime.own(Thing("drafter", closed, fails=True))
        runtime.own(Thing("engine", closed))
    assert closed == ["engine", "drafter", "model"]
    assert "closing the Thing failed" in caplog.text


def test_a_given_closer_is_used_instead_of_close():
    closed: list[str] = []
    with Runtime() as runtime:
        runtime.own(object(), close=lambda: closed.append("custom"))
    assert closed == ["custom"]
