"""The documentation stays true: docs/options.md is the tools' current --help text, docs/benchmarks.md is what the
recorded benchmark runs give, README names real commands, and no page is a dated diary or cites documents that are
not in this repository."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import page

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_options_doc",
                                                  os.path.join(ROOT, "scripts", "make_options_doc.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_doc_matches_the_help_texts():
    generator = _load_generator()
    with open(generator.DOC, encoding="utf-8") as f:
        written = f.read()
    assert written == generator.render(), \
        "docs/options.md is out of date: run python scripts/make_options_doc.py"


def test_readme_starts_with_the_two_commands_and_links_existing_docs():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    for doc in set(re.findall(r"`(docs/[\w./-]+\.md)`", readme)):
        assert os.path.isfile(os.path.join(ROOT, doc)), "README links %s, which does not exist" % doc


def test_benchmarks_page_is_generated_from_the_records():
    with open(page.DOC, encoding="utf-8") as f:
        written = f.read()
    assert written == page.render(), "docs/benchmarks.md is out of date: run python -m benchmarks.page"


def test_benchmarks_page_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    stale = tmp_path / "benchmarks.md"
    stale.write_text(page.render() + "| a figure without a record | 99 |\n", encoding="utf-8")
    monkeypatch.setattr(page, "DOC", stale)
    try:
        page.main(["--check"])
    except SystemExit as e:
        assert "out of date" in str(e)
    else:
        raise AssertionError("a page with a figure that has no record passed the check")
