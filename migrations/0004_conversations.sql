-- Every answered turn, and how the answer performed.
CREATE TABLE conversation_memory (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id          integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    conversation_id  varchar(200) NOT NULL,
    user_id          varchar(200),
    channel          varchar(50) NOT NULL DEFAULT 'chat',
    question         text,
    answer           text,
    transcript       text,
    summary          text,
    tier             varchar(20),
    confidence       real,
    sources          jsonb NOT NULL DEFAULT '[]'::jsonb,
    embedding        vector(384),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_memory_conversation ON conversation_memory (shop_id, conversation_id, created_at);
CREATE INDEX idx_memory_shop_created ON conversation_memory (shop_id, created_at);
CREATE INDEX idx_memory_fallback ON conversation_memory (shop_id, created_at)
    WHERE tier = 'fallback';

CREATE TABLE response_analytics (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id                integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    conversation_id        uuid NOT NULL REFERENCES conversation_memory (id) ON DELETE CASCADE,
    response_text          text,
    response_type          varchar(50) NOT NULL,
    user_engagement_score  integer CHECK (user_engagement_score BETWEEN 0 AND 100),
    led_to_conversion      boolean,
    response_time_ms       integer,
    ab_test_variant        varchar(50),
    metrics                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_analytics_conversation ON response_analytics (conversation_id);
CREATE INDEX idx_analytics_response_type ON response_analytics (response_type);
CREATE INDEX idx_analytics_created_at ON response_analytics (created_at);
CREATE INDEX idx_analytics_ab_variant ON response_analytics (ab_test_variant);
CREATE INDEX idx_analytics_type_created ON response_analytics (response_type, created_at);
CREATE INDEX idx_analytics_conversion ON response_analytics (led_to_conversion);
CREATE INDEX idx_analytics_shop_created ON response_analytics (shop_id, created_at);
