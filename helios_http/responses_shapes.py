"""The Responses API's bodies: the response object, its usage, and what the store lists.

Plain dicts, fields in the order of OpenAI's API reference, so the openai SDK's models parse them
(its `output_text` is computed from the `output_text` parts of `message` items).
"""

from __future__ import annotations

from typing import Any

from helios_http import shapes


def response_body(
    id_: str,
    created_at: int,
    model: str,
    echo: dict[str, Any],
    *,
    status: str = "in_progress",
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response object; echo: the request's parameters (ResponsesRequest.echo)."""
    finished = status in ("completed", "incomplete", "failed")
    return {
        "id": id_,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": shapes.now() if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "output": output or [],
        "usage": usage if finished else None,
        **echo,
    }


def usage_body(chat_usage: dict[str, Any]) -> dict[str, Any]:
    """Chat's usage (shapes.UsageTally.body) in the Responses API's names."""
    # 0 where the served model has no reasoning format, as OpenAI reports it for models that do not reason.
    reasoning_tokens = chat_usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0)
    return {
        "input_tokens": chat_usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": chat_usage["prompt_tokens_details"]["cached_tokens"]},
        "output_tokens": chat_usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": chat_usage["total_tokens"],
    }


def failure(message: str, code: str = "server_error") -> dict[str, Any]:
    """A failed response's `error`."""
    return {"code": code, "message": message}


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A list page, as GET /v1/responses/{id}/input_items answers."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
