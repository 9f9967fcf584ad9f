-- Daily figures (UTC days) the owners' metrics read (refreshed by the refresh-metrics job, like the seed's
-- two views): answers by tier, confidence and answer time per A/B variant; feedback; reviews.
CREATE MATERIALIZED VIEW daily_answer_metrics AS
SELECT m.shop_id,
       (m.created_at AT TIME ZONE 'UTC')::date                                AS date,
       coalesce(a.ab_test_variant, '')                                      AS variant,
       count(*)                                                             AS answers,
       count(*) FILTER (WHERE m.tier IN ('fallback', 'decline'))            AS fallbacks,
       count(*) FILTER (WHERE m.tier = 'decline')                           AS declines,
       count(*) FILTER (WHERE m.tier = 'handover')                          AS handovers,
       avg(m.confidence)                                                    AS mean_confidence,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.response_time_ms)      AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.response_time_ms)     AS p95_ms
FROM conversation_memory AS m
JOIN response_analytics AS a ON a.conversation_id = m.id
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX idx_daily_answer_metrics ON daily_answer_metrics (shop_id, date, variant);

CREATE MATERIALIZED VIEW daily_feedback_metrics AS
SELECT shop_id,
       (created_at AT TIME ZONE 'UTC')::date                              AS date,
       count(*) FILTER (WHERE metadata ->> 'sentiment' = 'positive')    AS positive,
       count(*) FILTER (WHERE metadata ->> 'sentiment' = 'negative')    AS negative
FROM conversation_feedback
GROUP BY 1, 2;
CREATE UNIQUE INDEX idx_daily_feedback_metrics ON daily_feedback_metrics (shop_id, date);

CREATE MATERIALIZED VIEW daily_review_metrics AS
SELECT shop_id,
       (created_at AT TIME ZONE 'UTC')::date                                        AS date,
       count(*) FILTER (WHERE action = 'queue.auto_approve')                      AS auto_approved,
       count(*) FILTER (WHERE action IN ('queue.approve', 'queue.edit_approve'))  AS approved,
       count(*) FILTER (WHERE action IN ('queue.reject', 'queue.out_of_scope'))   AS rejected,
       count(*) FILTER (WHERE action = 'queue.apply')                             AS applied
FROM learning_audit_log
WHERE shop_id IS NOT NULL
GROUP BY 1, 2;
CREATE UNIQUE INDEX idx_daily_review_metrics ON daily_review_metrics (shop_id, date);

-- How long a shop keeps raw text (transcripts, conversation text, feedback wording); NULL keeps it.
ALTER TABLE shops ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 36500);
