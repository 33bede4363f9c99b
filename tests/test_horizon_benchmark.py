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
    command = [sys.executable, str(ROOT / "benchmarks" / "horizon.py"), "--ks", "2,8", "--models", "convnet",
               "--methods", "leap,maml", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["method"], r["k"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("leap", 2), ("leap", 8), ("maml", 2), ("maml", 8)}
    # measured: MAML 62-73 -> 170 MiB from K = 2 to 8 (six more differentiated steps), Leap
    # 27-28 -> 26-28 (from run to run Leap's peak varied by up to 9 MiB at K = 2)
    assert rows["maml", 8]["peak_mib"] - rows["maml", 2]["peak_mib"] > 50
    assert abs(rows["leap", 8]["peak_mib"] - rows["leap", 2]["peak_mib"]) < 20
    assert "| convnet | maml | 8 |" in out.with_suffix(".md").read_text()


def test_a_second_run_on_the_same_output_keeps_the_measured_cells_and_measures_only_the_new_ones(tmp_path):
    out = tmp_path / "horizon.json"
    base = [sys.executable, str(ROOT / "benchmarks" / "horizon.py"), "--models", "convnet", "--methods", "plain",
            "--out", str(out)]
    subprocess.run([*base, "--ks", "2"], check=True, capture_output=True, timeout=300)
    first = json.loads(out.read_text())["rows"]
    proc = subprocess.run([*base, "--ks", "2,3"], check=True, capture_output=True, text=True, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert [r["k"] for r in rows] == [2, 3]
    assert rows[0] == first[0]  # not measured again: a stopped measurement continues where it stopped
    assert proc.stdout.count("| convnet | plain |") == 1
