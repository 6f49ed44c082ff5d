"""The documentation stays true: docs/options.md is the tools' current --help text, docs/benchmarks.md is what the
recorded benchmark runs give, README names real commands, and no page is a dated diary or cites documents that are
not in this repository."""
import importlib.util
import os
import re
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


OUTSIDE_REFERENCE = re.compile(r"\b[Ii]ssues? #?\d+|\bSPEC\b|(?<![\w/])BENCHMARKS\.md")
DATED = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b|\b(morning|afternoon|evening|late night)\b", re.IGNORECASE)


def _texts(*folders_and_files):
    for name in folders_and_files:
        path = Path(ROOT) / name
        for file in sorted(path.rglob("*") if path.is_dir() else [path]):
            if file.is_file() and file.suffix in (".py", ".md", ".sh") and "results" not in file.parts:
                yield file.relative_to(ROOT).as_posix(), file.read_text(encoding="utf-8")


def test_no_reference_to_documents_or_issues_outside_the_repository():
    found = ["%s:%d: %s" % (name, n, line.strip()) for name, text in _texts("captioning", "docs", "benchmarks",
                                                                             "README.md")
             for n, line in enumerate(text.splitlines(), 1) if OUTSIDE_REFERENCE.search(line)]
    assert not found, "references to documents or issues outside this repository:\n" + "\n".join(found)


def test_the_reference_pattern_finds_what_it_must():
    for line in ("as issue 13 asks", "see Issue 7", "SPEC §4", "(SPEC: empty input)", "BENCHMARKS.md says"):
        assert OUTSIDE_REFERENCE.search(line), line
    for line in ("the tissue 3 of SPECTRUM", "docs/benchmarks.md", "def shard_spec(value)"):
        assert not OUTSIDE_REFERENCE.search(line), line


def test_no_docs_page_is_a_dated_diary():
    """Docs are a reference: no section titled by a date or a time of day, no dated figures. The generated results
    page is exempt (its dates are those of its records), as is the generated options page."""
    generated = {"docs/benchmarks.md", "docs/options.md"}
    found = []
    for name, text in _texts("docs", "README.md"):
        for n, line in enumerate(text.splitlines(), 1):
            heading = line.startswith("#")
            if DATED.search(line) and (heading or name not in generated):
                found.append("%s:%d: %s" % (name, n, line.strip()))
    assert not found, "dated sections or figures in the docs:\n" + "\n".join(found)
    assert DATED.search("## Same run, trained models (2026-11-29 afternoon)")


def test_every_record_a_page_cites_exists():
    """A figure quoted outside the generated page names its record; the record must be in benchmarks/results."""
    cited = [(name, m.group(1)) for name, text in _texts("docs", "README.md")
             for m in re.finditer(r"benchmarks/results/([\w.+-]+\.json)", text)]
    assert any(name == "docs/training.md" for name, _ in cited)
    missing = [(name, record) for name, record in cited if not (Path(ROOT) / "benchmarks" / "results" / record).is_file()]
    assert not missing, missing
