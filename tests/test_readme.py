"""The README's examples run exactly as written."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no python block after <!-- {marker} -->"
    return match.group(1)


def test_readme_custom_sampler_example_runs(capsys):
    code = readme_block("sampler-example")
    assert len(code.strip().splitlines()) <= 14
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert len(printed.strip()) > 10
