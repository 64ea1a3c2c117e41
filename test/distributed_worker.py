"""What torchrun starts in test_distributed: `wsvs-train fit ARGS...`, killed at an iteration on the first attempt.

WSVS_TEST_KILL="RANK:ITERATION" makes that rank SIGKILL itself as it starts that iteration (0-based), before any
collective of it, but only while torchrun's TORCHELASTIC_RESTART_COUNT is 0: the restarted workers run through.
"""

from __future__ import annotations

import os
import signal
import sys

from wsvs_training import cli, train

if "WSVS_TEST_KILL" in os.environ and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
    rank, at = (int(v) for v in os.environ["WSVS_TEST_KILL"].split(":"))
    if int(os.environ["RANK"]) == rank:
        step = train.train_step

        def step_or_die(run: train.Training, iteration: int) -> dict[str, float]:
            if iteration == at:
                print(f"test: killing rank {rank} at iteration {at}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # no exception, no cleanup: as a killed process
            return step(run, iteration)

        train.train_step = step_or_die

sys.exit(cli.main(sys.argv[1:]))
