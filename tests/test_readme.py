"""The README's guide runs as written: the five snippets of "The whole life of an
initialization", in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def guide_snippets(heading: str) -> list[str]:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_whole_life_of_an_initialization_runs_and_theta0_beats_a_random_init(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    snippets = guide_snippets("The whole life of an initialization")
    assert len(snippets) == 5
    namespace: dict = {}
    for code in snippets:
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "init.safetensors").is_file()
    assert "held-out MSE after 10 steps: from θ0" in capsys.readouterr().out
    assert namespace["from_theta0"] < namespace["from_random"]  # what the guide shows
