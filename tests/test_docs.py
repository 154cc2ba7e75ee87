"""The generated pages of docs/ (formats.md, cli.md) match the code (scripts/make_docs.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_are_up_to_date():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_every_doc_link_in_the_readme_exists():
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md|LICENSE)\)", readme)
    assert len(links) >= 8
    for link in links:
        assert (ROOT / link).exists(), link
