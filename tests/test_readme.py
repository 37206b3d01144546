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
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]

        sdk = readme_block("openai-example").replace("8000", port)
        result = subprocess.run([sys.executable, "-c", sdk], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip()) > 0
    finally:
        server.stop()
