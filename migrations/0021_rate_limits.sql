-- Requests per second each API key of a shop may make (a burst of twice as many is allowed);
-- NULL: the server's default (LEARNKB_RATE_LIMIT_PER_SECOND).
ALTER TABLE shops ADD COLUMN rate_limit_per_second real
    CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second BETWEEN 0.1 AND 100000);
