"""The local executor: one cell at a time on this machine, each in a fresh spawned process."""

from __future__ import annotations

import time

from segbench.results.store import utc_now
from segbench.run.executors.base import Job, JobFinished, JobStarted
from segbench.run.repeats import execute_repeated


class LocalExecutor:
    def run(self, jobs: list[Job], started: JobStarted, finished: JobFinished) -> None:
        for job in jobs:
            started(job)
            began_at, clock = utc_now(), time.perf_counter()
            outcome = execute_repeated(job.request, job.timeout_s, job.log_path)
            finished(job, {**outcome, "started_at": began_at, "wall_s": round(time.perf_counter() - clock, 3)})
