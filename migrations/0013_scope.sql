-- What a shop does not know: its owner's out-of-scope examples (with an optional redirect), the
-- strictness of the fallback decision, and the decision's per-shop calibration.
ALTER TABLE shops
    ADD COLUMN scope_strictness real NOT NULL DEFAULT 0.25
        CHECK (scope_strictness BETWEEN 0 AND 1);

CREATE TABLE out_of_scope_examples (
    id             bigserial PRIMARY KEY,
    shop_id        integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    question       text NOT NULL,
    redirect       text,
    embedding      vector(384) NOT NULL,
    model          text NOT NULL,
    queue_item_id  uuid REFERENCES learning_queue (id) ON DELETE SET NULL,
    created_by     uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_oos_shop ON out_of_scope_examples (shop_id, id);

-- One row per shop: the fitted decision, what it was fitted on, and the knowledge it saw.
CREATE TABLE scope_calibrations (
    shop_id        integer PRIMARY KEY REFERENCES shops (id) ON DELETE CASCADE,
    model          jsonb NOT NULL,
    stamp          text NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now()
);
