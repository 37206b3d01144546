"""The OpenAI Agents SDK (openai-agents) against a real `helios-engine serve`, over the Responses API.

The docs' example forces its one call, as a base model needs. The whole loop (a call, the tool run
by the SDK, its result sent back, an answer) runs on the rehearsal server, whose default plug-in
plays the model's two turns: the SDK sends nothing but the Responses API's own fields.
"""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from tests.conftest import PATIENCE
from tests.server_process import PLAIN, REHEARSED
from tests.test_readme import doc_block

set_tracing_disabled(True)  # the SDK would otherwise export traces to OpenAI


def test_the_docs_agents_example_runs_as_written(shared_server, capsys):
    server = shared_server(*PLAIN)
    code = doc_block("agents-example").replace("127.0.0.1:8000", server.url.removeprefix("http://"))
    written = 'api_key="unused")'  # a failure fails the test, not retries for minutes
    assert written in code
    code = code.replace(written, f'api_key="unused", max_retries=0, timeout={PATIENCE})')
    exec(compile(code, "agents-example", "exec", dont_inherit=True), {})
    # The tool's own text; the city is the base model's argument, which other CPUs may spell otherwise.
    assert capsys.readouterr().out.startswith("Sunny and 24 C in ")


@pytest.mark.parametrize("stream", [False, True])
def test_an_agent_calls_its_tool_and_answers_from_the_result(shared_server, stream):
    server = shared_server(*REHEARSED)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"21 C, clear in {city}"

    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="gemma-3-270m", openai_client=client),
    )

    async def run():
        if not stream:
            return await Runner.run(agent, "What is the weather in Paris?")
        result = Runner.run_streamed(agent, "What is the weather in Paris?")
        kinds = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        return result

    result = asyncio.run(run())
    assert calls == ["Paris"]
    assert result.final_output == "Sunny."
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
