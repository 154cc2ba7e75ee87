"""The README's quickstart runs as written (its Python blocks, in order, in one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_quickstart_python_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert 0.89 <= namespace["result"].sparsity <= 0.91
    assert namespace["coin"].reconstruction.shape == namespace["image"].shape
    printed = capsys.readouterr().out.split()
    assert len(printed) >= 5
