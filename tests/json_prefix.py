"""Is a text the start of some JSON text? For outputs that max_tokens cut ("length") before they were complete.

An oracle of its own, independent of llguidance: it closes whatever the
text left open (an escape, a string, a literal or number, a key without its
value, the open arrays and objects) in each of a few ways, and asks
Python's json module whether one of them parses.
"""

from __future__ import annotations

import json

# What may be missing before the closing brackets: nothing, a value, a key's value, a key and value,
# the rest of true/false/null, a number's digit.
_FILLERS = ("", "0", ": 0", '"": 0', "rue", "ue", "e", "alse", "lse", "se", "ull", "ll", "l", "1")


def is_json_prefix(text: str) -> bool:
    """True when some continuation of `text` is one complete JSON value."""
    closers: list[str] = []
    in_string = escaped = False
    unicode_digits = 0  # hex digits still owed to a \\u escape
    for ch in text:
        if in_string:
            if unicode_digits:
                if ch not in "0123456789abcdefABCDEF":
                    return False
                unicode_digits -= 1
            elif escaped:
                if ch not in '"\\/bfnrtu':
                    return False
                escaped, unicode_digits = False, 4 if ch == "u" else 0
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            closers.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if not closers or closers.pop() != ch:
                return False
    string_end = ""
    if in_string:
        string_end = ("n" if escaped else "") + "0" * unicode_digits + '"'
    brackets = "".join(reversed(closers))
    for filler in _FILLERS:
        try:
            json.loads(text + string_end + filler + brackets)
        except ValueError:
            continue
        return True
    return False


def assert_object_or_its_start(text: str, finish_reason: str) -> None:
    """An output constrained to a JSON object: a whole one when it stopped, the start of one when max_tokens cut it.

    Greedy decoding of an open object may run on until max_tokens on some CPUs and stop early on others.
    """
    assert text.startswith("{"), text
    if finish_reason == "stop":
        assert isinstance(json.loads(text), dict), text
    else:
        assert finish_reason == "length" and is_json_prefix(text), (finish_reason, text)
