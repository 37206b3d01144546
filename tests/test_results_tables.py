"""The results tables in the README and docs/ are the ones benchmarks/results_tables.py writes."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import results_tables  # noqa: E402


@pytest.mark.parametrize("doc", results_tables.DOCS, ids=lambda path: path.name)
def test_doc_tables_match_benchmarks_results(doc):
    text = doc.read_text()
    assert results_tables.render(text) == text, f"run .venv/bin/python benchmarks/results_tables.py ({doc.name})"


def test_every_table_is_in_a_doc():
    shown = "".join(doc.read_text() for doc in results_tables.DOCS)
    assert [name for name in results_tables.TABLES if f"<!-- results:{name} -->" not in shown] == []


def test_a_table_is_written_from_the_newest_run(tmp_path):
    for stamp, ratio in (("20260101-000000", 0.5), ("20260102-000000", 0.75)):
        run = {"summary": {"helios_scored_tok_s": 1.0, "llama_perplexity_scored_tok_s": 2.0, "ratio": ratio}}
        run["summary"] |= {"helios_ppl": 6.0, "llama_perplexity_ppl": 6.0, "settings": {"rounds": 1}}
        (tmp_path / f"bench_score-{stamp}.json").write_text(json.dumps(run))
    assert results_tables.newest("bench_score", tmp_path)[1]["summary"]["ratio"] == 0.75
    rendered = results_tables.render("a\n<!-- results:score -->\nold\n<!-- /results:score -->\nb", tmp_path)
    assert "old" not in rendered and "| 0.500 |" in rendered and "| 0.750 |" in rendered
    assert rendered.startswith("a\n<!-- results:score -->\n") and rendered.endswith("<!-- /results:score -->\nb")


def test_a_table_without_a_run_says_so(tmp_path):
    rendered = results_tables.render("<!-- results:media -->\n<!-- /results:media -->", tmp_path)
    assert (
        rendered
        == "<!-- results:media -->\n_No run of bench_media in benchmarks/results/ yet._\n<!-- /results:media -->"
    )
