"""The examples of the README and docs/ run exactly as written.

An example is a fenced block right after an HTML comment naming it (`<!-- engine-example -->`),
found wherever it lives (README.md or docs/*.md), so moving it between pages changes no test.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT, THREADS

PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
# Marked examples that need what the suite does not have: a reasoning model, a vision model from the hub.
NOT_RUN = {"reasoning-serve", "reasoning-example", "multimodal-serve"}


def doc_block(marker: str, language: str = "python") -> str:
    """The block marked `marker`, from the one page that has it."""
    found = [
        match.group(1)
        for page in PAGES
        for match in re.finditer(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", page.read_text(), re.S)
    ]
    assert len(found) == 1, f"{len(found)} {language} blocks after <!-- {marker} --> in README.md and docs/"
    return found[0]


def test_every_marked_example_is_run_by_a_test():
    markers = {m for page in PAGES for m in re.findall(r"<!-- ([\w-]+) -->\s*```", page.read_text())}
    tests = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    unrun = {m for m in markers - NOT_RUN if m not in tests}
    assert markers >= NOT_RUN and not unrun, f"marked examples that no test runs: {sorted(unrun)}"


def test_readme_custom_sampler_example_runs(capsys):
    code = doc_block("sampler-example")
    assert len(code.strip().splitlines()) <= 14
    # As written the example uses every core; the suite runs the engine on THREADS.
    assert code.count("Generator(model, ") == 1
    code = code.replace("Generator(model, ", f"Generator(model, n_threads={THREADS}, ")
    exec(compile(code, "sampler-example", "exec"), {})
    printed = capsys.readouterr().out
    assert len(printed.strip()) > 10


def test_readme_curl_and_openai_examples_work_against_a_real_server(shared_server, capsys):
    import json
    import subprocess

    from tests.server_process import PLAIN

    port = str(shared_server(*PLAIN).port)
    curl = doc_block("curl-example", "sh").replace("8000", port)
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=300, check=True).stdout
    reply = json.loads(out)
    assert reply["object"] == "text_completion" and reply["choices"][0]["text"]

    # The SDK example in this process: a fresh interpreter would only add its start-up.
    sdk = doc_block("openai-example").replace("8000", port)
    exec(compile(sdk, "openai-example", "exec"), {})
    assert len(capsys.readouterr().out.strip()) > 0


# As written the examples use every core; the suite runs contexts on THREADS.
ON_THREADS = {"Context(model, ": f"Context(model, n_threads={THREADS}, "}


def _run_python_block(marker: str, capsys, *, replacements: dict[str, str]) -> str:
    """Run a marked block with the stated edits (the suite's thread count...); return what it printed."""
    code = doc_block(marker)
    for old, new in replacements.items():
        assert old in code, f"the {marker} block no longer contains {old!r}"
        code = code.replace(old, new)
    exec(compile(code, marker, "exec"), {})
    return capsys.readouterr().out


def test_docs_scoring_example_runs(capsys):
    # perplexity() of a shorter piece of the same file (two chunks), in shorter chunks: the whole README takes minutes.
    printed = _run_python_block(
        "scoring-example",
        capsys,
        replacements={
            **ON_THREADS,
            ".read()": ".read()[:2200]",
            "n_ctx=512)": f"n_ctx=256, n_threads={THREADS})",
        },
    ).splitlines()
    paris, rome = (float(x) for x in printed[0].split())
    assert paris > rome  # the model knows which is right
    assert 1.0 < float(printed[-1]) < 100.0


def test_readme_engine_example_runs(capsys):
    printed = _run_python_block("engine-example", capsys, replacements=ON_THREADS).splitlines()
    assert len(printed) == 4 and all(line.endswith(("length", "stop")) for line in printed)


def test_docs_batch_sampler_example_runs(capsys):
    printed = _run_python_block("batch-sampler-example", capsys, replacements=ON_THREADS)
    assert printed.startswith("[") and printed.count("'") >= 6


def test_docs_constraint_example_prints_json_that_validates(capsys):
    import json

    code = doc_block("constraint-example")
    assert len(code.strip().splitlines()) <= 10
    code = code.replace("Generator(model, ", f"Generator(model, n_threads={THREADS}, ")
    exec(compile(code, "constraint-example", "exec"), {})
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"city", "population"} and 0 <= record["population"] <= 40_000_000


def test_docs_logits_example_prints_the_likeliest_next_piece(capsys):
    printed = _run_python_block("logits-example", capsys, replacements=ON_THREADS)
    assert len(printed.splitlines()) == 1 and printed.strip()


def test_docs_embed_example_prints_unit_vectors(capsys):
    dancing = '"Bees communicate by dancing."]'
    printed = _run_python_block(
        "embed-example", capsys, replacements={dancing: f"{dancing}, n_threads={THREADS}"}
    ).split(maxsplit=2)
    assert printed[:2] == ["(2,", "640)"]
    cosines = [float(x) for x in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", printed[2])]
    assert len(cosines) == 4 and abs(cosines[0] - 1) < 1e-3 and abs(cosines[3] - 1) < 1e-3 and cosines[1] < 0.999
