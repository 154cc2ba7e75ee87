"""The generated parts of docs/ match their sources (scripts/make_docs.py): formats.md and cli.md
the code, and the results tables between ``<!-- results:NAME -->`` markers the committed
benchmarks/results/*/results.json."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_docs_are_up_to_date():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_every_results_table_is_marked_once_and_a_changed_number_is_put_back():
    docs = make_docs()
    marked = [name for names in docs.result_markers().values() for name in names]
    assert sorted(marked) == sorted(docs.RESULT_TABLES)
    page = (ROOT / "docs" / "pruning.md").read_text()
    edited = page.replace("| SNIP | 77.5 ± 0.3 |", "| SNIP | 99.9 ± 0.3 |")
    assert edited != page and docs.with_results(edited, "pruning.md") == page
    # the tables are the JSON's numbers: one checked by hand against benchmarks/results/prune-at-init
    assert "| ProsPr (M = 3) | **79.3 ± 0.8** | 75.6 ± 2.2 | 68.1 ± 7.3 | 49.8 ± 27.5 |" in page


def test_every_doc_link_in_the_readme_exists():
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md|LICENSE)\)", readme)
    assert len(links) >= 8
    for link in links:
        assert (ROOT / link).exists(), link
