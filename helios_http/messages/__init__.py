"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

A thin translator over the one internal request: request.py turns a Messages body into the
ChatRequest that chat completions run (parse_chat: the same sampling fields, limits, tools and
constraints, helios's extension fields included); blocks.py turns the engine's events into
content blocks, which api.py sends whole and stream.py as Anthropic's events; errors.py gives
every error on these paths Anthropic's shape.
"""
