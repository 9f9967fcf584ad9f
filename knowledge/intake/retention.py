"""How long raw text is kept: past a shop's retention, transcripts and conversation text go.

What stays: the redacted knowledge, the queue's items and their excerpts as they were approved,
and every figure (the rows stay, only their text is cleared, so counts and aggregates hold).
"""

from __future__ import annotations

from knowledge.runtime import Runtime
from knowledge.store.locks import try_advisory_lock

SHOPS_WITH_RETENTION = "SELECT id, retention_days FROM shops WHERE retention_days IS NOT NULL"
# Batches keep each transaction short on a large shop.
BATCH = 5_000
EXPIRE_TRANSCRIPTS = """
WITH old AS (
    SELECT id FROM voice_transcripts
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND NOT coalesce((metadata ->> 'expired')::boolean, false)
    LIMIT $3
)
UPDATE voice_transcripts AS t
SET transcript = '', processed_summary = NULL,
    -- what each pair became stays, without the words
    learning_insights = (t.learning_insights - 'turns' - 'pairs' - 'unanswered' - 'bot_answered'
                         - 'queued')
        || jsonb_build_object('queued', coalesce(
               (SELECT jsonb_agg(q - 'question')
                FROM jsonb_array_elements(t.learning_insights -> 'queued') AS q), '[]'::jsonb)),
    metadata = t.metadata || '{"expired": true}'::jsonb
FROM old WHERE t.id = old.id
"""
EXPIRE_TURNS = """
WITH old AS (
    SELECT id FROM conversation_memory
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND (question IS NOT NULL OR answer IS NOT NULL OR transcript IS NOT NULL)
    LIMIT $3
)
UPDATE conversation_memory AS m
SET question = NULL, answer = NULL, transcript = NULL, summary = NULL,
    metadata = '{"expired": true}'::jsonb
FROM old WHERE m.id = old.id
"""
EXPIRE_ANALYTICS_TEXT = """
WITH old AS (
    SELECT id FROM response_analytics
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND response_text IS NOT NULL
    LIMIT $3
)
UPDATE response_analytics AS a SET response_text = NULL FROM old WHERE a.id = old.id
"""
EXPIRE_FEEDBACK_TEXT = """
WITH old AS (
    SELECT id FROM conversation_feedback
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND reason IS NOT NULL
    LIMIT $3
)
UPDATE conversation_feedback AS f SET reason = NULL FROM old WHERE f.id = old.id
"""
# A correction keeps the owner's answer; the customer's question and the bot's words it copied
# go.
EXPIRE_CORRECTION_TEXT = """
WITH old AS (
    SELECT id FROM owner_corrections
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND (question IS NOT NULL OR original_response IS NOT NULL)
    LIMIT $3
)
UPDATE owner_corrections AS c SET question = NULL, original_response = NULL
FROM old WHERE c.id = old.id
"""
# Excerpts of calls stay only on what was approved; items never approved lose them.
EXPIRE_EXCERPTS = """
WITH old AS (
    SELECT id FROM learning_queue
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2)
      AND status NOT IN ('approved', 'applied') AND signals @? '$[*].excerpt'
    LIMIT $3
)
UPDATE learning_queue AS q
SET signals = (SELECT jsonb_agg(e - 'excerpt' ORDER BY i)
               FROM jsonb_array_elements(q.signals) WITH ORDINALITY AS s(e, i)),
    metadata = q.metadata - 'excerpt'
FROM old WHERE q.id = old.id
"""
STEPS = {"transcripts": EXPIRE_TRANSCRIPTS, "turns": EXPIRE_TURNS,
         "answers": EXPIRE_ANALYTICS_TEXT, "feedback": EXPIRE_FEEDBACK_TEXT,
         "corrections": EXPIRE_CORRECTION_TEXT, "excerpts": EXPIRE_EXCERPTS}


async def expire(rt: Runtime) -> dict[str, int] | None:
    """Clear raw text past each shop's retention; None when another replica is at it."""
    async with try_advisory_lock(rt.pool, "job:retention") as held:
        if held is None:
            return None
        done = dict.fromkeys(STEPS, 0)
        for shop in await held.fetch(SHOPS_WITH_RETENTION):
            for name, sql in STEPS.items():
                while True:
                    # Each batch commits on its own: a crash keeps what was done, and a re-run
                    # picks up the rest (cleared rows no longer match).
                    status = await held.execute(sql, shop["id"], shop["retention_days"], BATCH)
                    count = int(status.split()[-1])
                    done[name] += count
                    if count < BATCH:
                        break
        return done
