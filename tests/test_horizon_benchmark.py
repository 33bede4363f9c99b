"""benchmarks/horizon.py measures what issue 32 claims: MAML's memory grows with the number of
inner steps it differentiates through; Leap's stays at the plain training's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_maml_memory_grows_with_the_inner_steps_and_leaps_does_not(tmp_path):
    out = tmp_path / "horizon.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "horizon.py"), "--quick", "--models", "convnet",
                           "--methods", "leap,maml", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["method"], r["k"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("leap", 2), ("leap", 4), ("maml", 2), ("maml", 4)}
    # measured: MAML 73 -> 104 MiB from K = 2 to 4 (two more differentiated steps), Leap 28 -> 28
    assert rows["maml", 4]["peak_mib"] - rows["maml", 2]["peak_mib"] > 10
    assert abs(rows["leap", 4]["peak_mib"] - rows["leap", 2]["peak_mib"]) < 10
    assert "| convnet | maml | 4 |" in out.with_suffix(".md").read_text()
