"""Reasoning over HTTP: the request fields that turn thinking on, off and down, and the reasoning fields out.

In (chat completions; other families translate theirs onto the same ChatRequest fields):
- `chat_template_kwargs`: any variables for the Jinja template (`enable_thinking` as Qwen3's reads it);
- `reasoning_effort`: none ... xhigh, handed to templates that read it (gpt-oss), and "none" means no
  thinking: the template's own switch where it has one, a budget of 0 otherwise;
- `reasoning_budget_tokens` (alias `thinking_budget_tokens`), a sampling field (schemas.SamplingFields);
- an assistant message's `reasoning_content` (or `reasoning`), for the template to keep or drop.

Other families: `apply_thinking` (Anthropic's `thinking`) and `apply_effort` (Responses' `reasoning`)
set the same ChatRequest fields, before chat_api.chat_prompt renders it.

Out: a message's and a delta's `reasoning_content` and `reasoning` (llama-server's and vLLM's names),
and usage's `completion_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helios_http.errors import invalid

if TYPE_CHECKING:
    from helios_http.schemas import ChatRequest

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def budget_name(body: dict[str, Any]) -> str:
    # llama-server's name, and the alias it takes.
    return "thinking_budget_tokens" if body.get("reasoning_budget_tokens") is None else "reasoning_budget_tokens"


def template_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise invalid(
            'chat_template_kwargs must be an object of template variables, e.g. {"enable_thinking": false}',
            "chat_template_kwargs",
        )
    reserved = [k for k in kwargs if k in ("messages", "tools", "add_generation_prompt", "bos_token", "eos_token")]
    if reserved:
        raise invalid(f"chat_template_kwargs cannot set {reserved[0]!r}: the server sets it", "chat_template_kwargs")
    return dict(kwargs)


def effort(body: dict[str, Any]) -> str | None:
    effort = body.get("reasoning_effort")
    return None if effort is None else _checked_effort(effort, "reasoning_effort")


def message_reasoning(message: dict[str, Any], role: str, where: str) -> dict[str, str]:
    """An earlier assistant message's reasoning, under each name templates read it by ({} when it has none)."""
    thought = message.get("reasoning_content", message.get("reasoning"))
    if thought is None:
        return {}
    if role != "assistant" or not isinstance(thought, str):
        raise invalid(
            f"{where}.reasoning_content: only an assistant message carries reasoning, as a string",
            f"{where}.reasoning_content",
        )
    # Qwen3 and DeepSeek read reasoning_content, Gemma 4 reasoning, gpt-oss thinking; each keeps it or drops it
    # from earlier turns as it was trained to.
    return {"reasoning_content": thought, "reasoning": thought, "thinking": thought}


def template_variables(parsed: ChatRequest, template: str | None, default_budget: int = -1) -> dict[str, Any]:
    """The variables a Jinja template (source `template`) renders this request with.

    Settles the request's reasoning budget first: its own, else 0 for reasoning_effort "none", else the
    server's (--reasoning-budget). enable_thinking follows it (false for 0) unless the request sets it.
    """
    sampling = parsed.sampling
    if sampling.reasoning_budget is None:
        sampling.reasoning_budget = 0 if parsed.reasoning_effort == "none" else default_budget
    variables = dict(parsed.template_kwargs)
    if template and "enable_thinking" in template and "enable_thinking" not in variables:
        variables["enable_thinking"] = sampling.reasoning_budget != 0
    if parsed.reasoning_effort is not None:
        variables.setdefault("reasoning_effort", parsed.reasoning_effort)
    return variables


def fields(text: str) -> dict[str, str]:
    """A message's or a delta's reasoning, under llama-server's name and vLLM's ({} for none)."""
    return {"reasoning_content": text, "reasoning": text} if text else {}


# --- other families' switches, onto the one ChatRequest ---------------------------------------------


def apply_thinking(parsed: ChatRequest, value: Any, param: str = "thinking") -> None:
    """Anthropic's `thinking`: {"type": "enabled", "budget_tokens": N} sets the budget, {"type": "disabled"} 0;
    "adaptive" and "between_tools" (the model decides) leave the server's (--reasoning-budget)."""
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("enabled", "disabled", "adaptive", "between_tools"):
        shapes = '{"type": "enabled", "budget_tokens": N}, {"type": "disabled"} or {"type": "adaptive"}'
        raise invalid(f"{param} must be {shapes}", param)
    if kind in ("adaptive", "between_tools"):
        return
    if kind == "disabled":
        parsed.sampling.reasoning_budget = 0
        return
    budget = value.get("budget_tokens")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise invalid(f"{param}.budget_tokens must be an integer >= 0", f"{param}.budget_tokens")
        parsed.sampling.reasoning_budget = budget


def apply_effort(parsed: ChatRequest, value: Any, param: str = "reasoning") -> None:
    """The Responses API's `reasoning`: {"effort": ...} as chat's reasoning_effort (its summary is not offered)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid(f'{param} must be an object such as {{"effort": "low"}}', param)
    effort = value.get("effort")
    if effort is not None:
        parsed.reasoning_effort = _checked_effort(effort, f"{param}.effort")


def _checked_effort(effort: Any, param: str) -> str:
    if effort not in REASONING_EFFORTS:
        raise invalid(f"{param} must be one of {', '.join(REASONING_EFFORTS)}; got {effort!r}", param)
    return effort
