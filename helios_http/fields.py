"""Readers of one request-body field each: a value of the right type and bounds, or a 400 naming the field."""

from __future__ import annotations

import math
from typing import Any

from helios_http.errors import invalid


def boolean_field(body: dict[str, Any], name: str, default: bool) -> bool:
    """A true/false field of a request body; absent or null means `default`, anything else is a 400."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false", name)
    return value


def integer(body: dict[str, Any], name: str, default, *, low: int | None = None, high: int | None = None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise invalid(f"{name} must be an integer", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(f"{name} must be {bounds_text(low, high)}; got {value}", name)
    return value


def number(body: dict[str, Any], name: str, default: float, *, low: float | None, high: float | None) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{name} must be a number", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(f"{name} must be {bounds_text(low, high)}; got {value}", name)
    return float(value)


def bounds_text(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"


def is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no token id
