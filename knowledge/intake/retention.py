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


def _expire(table: str, pending: str, clear: str) -> str:
    """Clear text of one table's rows past the shop's retention, a batch at a time; `pending`
    picks the rows that still hold text (so a re-run finds only what is left)."""
    return f"""
WITH old AS (
    SELECT id FROM {table}
    WHERE shop_id = $1 AND created_at < now() - make_interval(days => $2) AND ({pending})
    LIMIT $3
)
UPDATE {table} AS t SET {clear} FROM old WHERE t.shop_id = $1 AND t.id = old.id
"""


EXPIRE_TRANSCRIPTS = _expire(
    "voice_transcripts", "NOT coalesce((metadata ->> 'expired')::boolean, false)",
    # What each pair became stays, without the words.
    """transcript = '', processed_summary = NULL,
       learning_insights = (t.learning_insights - 'turns' - 'pairs' - 'unanswered'
                            - 'bot_answered' - 'queued')
           || jsonb_build_object('queued', coalesce(
                  (SELECT jsonb_agg(q - 'question')
                   FROM jsonb_array_elements(t.learning_insights -> 'queued') AS q),
                  '[]'::jsonb)),
       metadata = t.metadata || '{"expired": true}'::jsonb""")
EXPIRE_TURNS = _expire(
    "conversation_memory",
    "question IS NOT NULL OR answer IS NOT NULL OR transcript IS NOT NULL",
    """question = NULL, answer = NULL, transcript = NULL, summary = NULL,
       metadata = '{"expired": true}'::jsonb""")
EXPIRE_ANALYTICS_TEXT = _expire("response_analytics", "response_text IS NOT NULL",
                                "response_text = NULL")
EXPIRE_FEEDBACK_TEXT = _expire("conversation_feedback", "reason IS NOT NULL", "reason = NULL")
# A correction keeps the owner's answer; the customer's question and the bot's words it
# copied go.
EXPIRE_CORRECTION_TEXT = _expire(
    "owner_corrections", "question IS NOT NULL OR original_response IS NOT NULL",
    "question = NULL, original_response = NULL")
# Excerpts of calls stay only on what was approved; items never approved lose them.
EXPIRE_EXCERPTS = _expire(
    "learning_queue", "status NOT IN ('approved', 'applied') AND signals @? '$[*].excerpt'",
    """signals = (SELECT jsonb_agg(e - 'excerpt' ORDER BY i)
                  FROM jsonb_array_elements(t.signals) WITH ORDINALITY AS s(e, i)),
       metadata = t.metadata - 'excerpt'""")
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
