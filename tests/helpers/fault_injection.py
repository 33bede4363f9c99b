"""``leap`` command line with a fault injected on one rank (a helper of the torchrun and kill tests).

Run it like ``python -m leap`` (under torchrun, or with RANK/WORLD_SIZE/MASTER_* set by
hand). On the rank named by ``LEAP_FAULT_RANK``, just before meta-step
``LEAP_FAULT_STEP`` (1-based) of any experiment, the process does what ``LEAP_FAULT``
says: ``raise`` (an exception, as a bug or a CUDA error would), ``hang`` (sleeps, as a
stuck rank would), ``sigterm`` (sends itself SIGTERM, as a scheduler would, and goes on)
or ``kill`` (SIGKILL: the process vanishes, as after an out-of-memory kill).
With ``LEAP_FAULT_EVAL_CHECK=N`` instead, a Multi-CV run is killed (SIGKILL) at the N-th
validation check of its held-out evaluation, after pretraining, in the middle of the
evaluation's training.
Without ``LEAP_FAULT`` it is plain ``leap``. With ``LEAP_REPORT_THREADS=1`` each rank
prints, after the command returned, the names of the native threads still running in it
(Linux: /proc/self/task). The library itself carries no test hook: these are added here.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from leap import cli
from leap.engine import loop


def kill_during_multicv_evaluation(check: int) -> None:
    from leap.experiments.multicv import run, training

    evaluate_held_out, error_rate = run.evaluate_held_out, training.error_rate
    calls = 0

    def counting_error_rate(*args, **kwargs) -> float:
        nonlocal calls
        calls += 1
        if calls == check:
            os.kill(os.getpid(), signal.SIGKILL)
        return error_rate(*args, **kwargs)

    def evaluate_then_die(*args, **kwargs):
        training.error_rate = counting_error_rate  # fit_task reads it through the module
        return evaluate_held_out(*args, **kwargs)

    run.evaluate_held_out = evaluate_then_die


def inject() -> None:
    if "LEAP_FAULT_EVAL_CHECK" in os.environ:
        kill_during_multicv_evaluation(int(os.environ["LEAP_FAULT_EVAL_CHECK"]))
        return
    # A single process (no torchrun) is rank 0.
    if "LEAP_FAULT" not in os.environ or os.environ.get("RANK", "0") != os.environ["LEAP_FAULT_RANK"]:
        return
    kind = os.environ["LEAP_FAULT"]
    at_step = int(os.environ["LEAP_FAULT_STEP"])
    meta_step = loop.meta_step  # fit calls it through the module: patched here for every experiment

    def faulty_meta_step(trainer: loop.Trainer) -> dict | None:
        if trainer.step_count + 1 == at_step:
            if kind == "raise":
                raise RuntimeError(f"injected failure before meta-step {at_step}")
            if kind == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            elif kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            else:
                while True:  # a stuck rank: it never reaches the all-reduce
                    time.sleep(1)
        return meta_step(trainer)

    loop.meta_step = faulty_meta_step


def report_threads() -> None:
    if os.environ.get("LEAP_REPORT_THREADS") == "1":
        names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
        # One write(2) of the whole line: the ranks share the pipe, and print's separate
        # writes of text and newline interleaved two ranks' reports on one line.
        os.write(2, f"rank {os.environ.get('RANK')} threads after the command: {names}\n".encode())


if __name__ == "__main__":
    inject()
    code = cli.main(sys.argv[1:])
    report_threads()
    raise SystemExit(code)
