-- Aggregates for dashboards, refreshed by a batch job rather than computed per request.
CREATE MATERIALIZED VIEW daily_learning_metrics AS
SELECT date_trunc('day', created_at)::date AS date,
       shop_id,
       source_type,
       status,
       count(*)                 AS count,
       avg(confidence_score)    AS avg_confidence,
       sum(observations)        AS observations
FROM learning_queue
GROUP BY 1, 2, 3, 4;
CREATE UNIQUE INDEX idx_daily_learning_metrics
    ON daily_learning_metrics (date, shop_id, source_type, status);

CREATE MATERIALIZED VIEW response_performance_metrics AS
SELECT shop_id,
       response_type,
       date_trunc('day', created_at)::date                       AS date,
       count(*)                                                  AS total_responses,
       avg(user_engagement_score)                                AS avg_engagement,
       avg(CASE WHEN led_to_conversion THEN 1.0 ELSE 0.0 END)
           FILTER (WHERE led_to_conversion IS NOT NULL)          AS conversion_rate,
       avg(response_time_ms)                                     AS avg_response_time,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) AS p95_response_time
FROM response_analytics
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX idx_response_performance_metrics
    ON response_performance_metrics (shop_id, response_type, date);
