-- Every run of a batch job, by whichever process ran it. A scheduled run first claims its tick
-- (the interval of wall-clock time it belongs to): with several learnkb processes on one
-- database, each job runs once per tick. Kept a week (the retention job clears older rows).
CREATE TABLE job_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          text NOT NULL,
    tick         timestamptz NOT NULL,
    runner       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('ok', 'failed')),
    detail       text,
    UNIQUE (job, tick)
);
CREATE INDEX idx_job_runs_started ON job_runs (started_at);
