"""Job runs, failures and durations for Prometheus (shown by the serving process's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOB_RUNS = Counter("learnkb_job_runs", "Batch job runs, by job and outcome", ["job", "outcome"])
JOB_SECONDS = Histogram("learnkb_job_seconds", "Batch job durations", ["job"],
                        buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
