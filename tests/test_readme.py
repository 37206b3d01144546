"""The README's examples run exactly as written."""

from __future__ import annotations

import re

from tests.conftest import ROOT, THREADS


def readme_block(marker: str, language: str = "python") -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md has no {language} block after <!-- {marker} -->"
    return match.group(1)


def test_readme_custom_sampler_example_runs(capsys):
    code = readme_block("sampler-example")
    assert len(code.strip().splitlines()) <= 14
    # As written the example uses every core; the suite runs the engine on THREADS.
    assert code.count("Generator(model, ") == 1
    code = code.replace("Generator(model, ", f"Generator(model, n_threads={THREADS}, ")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert len(printed.strip()) > 10


def test_readme_curl_and_openai_examples_work_against_a_real_server():
    import json
    import subprocess
    import sys

    from tests.server_process import ServerProcess

    server = ServerProcess("--ctx-size", "512", "--parallel", "1")
    try:
        port = str(server.port)
        curl = readme_block("curl-example", "sh").replace("8000", port)
        out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=300, check=True).stdout
        reply = json.loads(out)
        assert reply["object"] == "text_completion" and reply["choices"][0]["text"]

        sdk = readme_block("openai-example").replace("8000", port)
        result = subprocess.run([sys.executable, "-c", sdk], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip()) > 0
    finally:
        server.stop()


def _run_python_block(marker: str, capsys, *, replacements: dict[str, str]) -> str:
    """Run a README block with the suite's thread count (and other stated edits); return what it printed."""
    code = readme_block(marker)
    for old, new in {"Context(model, ": f"Context(model, n_threads={THREADS}, ", **replacements}.items():
        assert old in code, f"the {marker} block no longer contains {old!r}"
        code = code.replace(old, new)
    exec(compile(code, "README.md", "exec"), {})
    return capsys.readouterr().out


def test_readme_scoring_example_runs(capsys):
    # perplexity() of a shorter piece of the same file, in shorter chunks: the whole README takes minutes.
    printed = _run_python_block(
        "scoring-example",
        capsys,
        replacements={
            ".read()": ".read()[:4000]",
            "n_ctx=512)": f"n_ctx=256, n_threads={THREADS})",
        },
    ).splitlines()
    paris, rome = (float(x) for x in printed[0].split())
    assert paris > rome  # the model knows which is right
    assert 1.0 < float(printed[-1]) < 100.0


def test_readme_engine_example_runs(capsys):
    printed = _run_python_block("engine-example", capsys, replacements={}).splitlines()
    assert len(printed) == 4 and all(line.endswith(("length", "stop")) for line in printed)


def test_readme_batch_sampler_example_runs(capsys):
    printed = _run_python_block("batch-sampler-example", capsys, replacements={})
    assert printed.startswith("[") and printed.count("'") >= 6


def test_readme_constraint_example_prints_json_that_validates(capsys):
    import json

    code = readme_block("constraint-example")
    assert len(code.strip().splitlines()) <= 10
    code = code.replace("Generator(model, ", f"Generator(model, n_threads={THREADS}, ")
    exec(compile(code, "README.md", "exec"), {})
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"city", "population"} and 0 <= record["population"] <= 40_000_000
