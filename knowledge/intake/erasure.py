"""Forgetting a customer: their turns, transcripts, feedback and what was built only from them.

Knowledge an owner approved stays (it is the shop's answer now, not the customer's data); the
queue items that came only from this customer go, with the audit rows that quoted them; items
that others' signals also support keep their place without this customer's signals. The
erasure itself is audited with counts and a hash of the user id, never text.
"""

from __future__ import annotations

import hashlib
from typing import Any

from knowledge.access import Principal
from knowledge.answering.turn_log import turn_log_of
from knowledge.errors import Invalid
from knowledge.runtime import Runtime
from knowledge.store import audit

# Locked, so that nothing built from them (a gap, a transcript's pairs) commits in between.
TURNS_OF_USER = """
SELECT id, conversation_id FROM conversation_memory WHERE shop_id = $1 AND user_id = $2
FOR UPDATE
"""
# Calls sent under the customer's id, or under one of their conversations.
TRANSCRIPTS_OF_USER = """
SELECT id FROM voice_transcripts
WHERE shop_id = $1 AND (user_id = $2 OR conversation_key = ANY($3::text[]))
FOR UPDATE
"""
FEEDBACK_OF_TURNS = """
SELECT id FROM conversation_feedback WHERE shop_id = $1 AND conversation_id = ANY($2::uuid[])
"""
CORRECTIONS_OF_TURNS = """
SELECT id FROM owner_corrections WHERE shop_id = $1 AND conversation_id = ANY($2::uuid[])
"""
# Queue items any of whose signals came from these sources; `only` when the item began with
# one of them (its question and metadata quote the customer, whoever merged into it later).
ITEMS_FROM = """
SELECT q.id,
       q.source_id::text = ANY($2::text[]) OR q.metadata ->> 'turn_id' = ANY($2::text[])
       OR q.metadata ->> 'transcript_id' = ANY($2::text[])
       OR NOT EXISTS (
           SELECT 1 FROM jsonb_array_elements(q.signals) AS s
           WHERE NOT (coalesce(s ->> 'source_id', '') = ANY($2::text[])
                      OR coalesce(s ->> 'turn_id', '') = ANY($2::text[]))) AS only
FROM learning_queue AS q
WHERE q.shop_id = $1
  AND (q.source_id::text = ANY($2::text[]) OR q.metadata ->> 'turn_id' = ANY($2::text[])
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(q.signals) AS s
                  WHERE s ->> 'source_id' = ANY($2::text[])
                     OR s ->> 'turn_id' = ANY($2::text[])))
"""
DROP_SIGNALS = """
UPDATE learning_queue AS q
SET signals = coalesce((SELECT jsonb_agg(s ORDER BY i)
                        FROM jsonb_array_elements(q.signals) WITH ORDINALITY AS e(s, i)
                        WHERE NOT (coalesce(s ->> 'source_id', '') = ANY($3::text[])
                                   OR coalesce(s ->> 'turn_id', '') = ANY($3::text[]))),
                       '[]'::jsonb)
WHERE q.shop_id = $1 AND q.id = ANY($2::uuid[])
"""
UNLINK_MERGES = """
UPDATE learning_queue SET merged_into = NULL WHERE shop_id = $1 AND merged_into = ANY($2::uuid[])
"""
DELETE_EXAMPLES = """
DELETE FROM out_of_scope_examples WHERE shop_id = $1 AND queue_item_id = ANY($2::uuid[])
"""
DELETE_ITEMS = "DELETE FROM learning_queue WHERE shop_id = $1 AND id = ANY($2::uuid[])"
# The audit trail keeps that something happened, not what the customer wrote: rows about
# the erased things, and rows that quote one of them (a signal dropped as already known names
# its source in `after`).
SCRUB_AUDIT = """
UPDATE learning_audit_log
SET before = CASE WHEN before IS NULL THEN NULL ELSE '{"erased": true}'::jsonb END,
    after = CASE WHEN after IS NULL THEN NULL ELSE '{"erased": true}'::jsonb END
WHERE shop_id = $1
  AND (subject_id = ANY($2::uuid[])
       OR before::text LIKE ANY($3::text[]) OR after::text LIKE ANY($3::text[]))
"""
DELETE_CORRECTIONS = "DELETE FROM owner_corrections WHERE shop_id = $1 AND id = ANY($2::uuid[])"
DELETE_TRANSCRIPTS = "DELETE FROM voice_transcripts WHERE shop_id = $1 AND id = ANY($2::uuid[])"
# Their analytics rows and feedback go with them (ON DELETE CASCADE).
DELETE_TURNS = "DELETE FROM conversation_memory WHERE shop_id = $1 AND id = ANY($2::uuid[])"


async def erase_user(rt: Runtime, shop_id: int, user_id: str,
                     actor: Principal) -> dict[str, Any]:
    """Remove everything of one customer of one shop; how many of each were removed."""
    if not user_id.strip() or len(user_id) > 200 or "\x00" in user_id:
        raise Invalid("user_id is 1 to 200 characters of text", field="user_id", limit=200)
    # Turns answered a moment ago may still be on their way to the log.
    await turn_log_of(rt).flush()
    async with rt.pool.acquire() as conn, conn.transaction():
        turn_rows = await conn.fetch(TURNS_OF_USER, shop_id, user_id)
        turns = [r["id"] for r in turn_rows]
        conversations = sorted({r["conversation_id"] for r in turn_rows})
        transcripts = [r["id"] for r in await conn.fetch(TRANSCRIPTS_OF_USER, shop_id, user_id,
                                                         conversations)]
        feedback = [r["id"] for r in await conn.fetch(FEEDBACK_OF_TURNS, shop_id, turns)]
        corrections = [r["id"] for r in await conn.fetch(CORRECTIONS_OF_TURNS, shop_id, turns)]
        sources = [str(x) for x in (*turns, *transcripts, *feedback, *corrections)]
        items = await conn.fetch(ITEMS_FROM, shop_id, sources) if sources else []
        only = [r["id"] for r in items if r["only"]]
        shared = [r["id"] for r in items if not r["only"]]
        if shared:
            await conn.execute(DROP_SIGNALS, shop_id, shared, sources)
        examples = 0
        if only:
            await conn.execute(UNLINK_MERGES, shop_id, only)
            examples = int((await conn.execute(DELETE_EXAMPLES, shop_id, only)).split()[-1])
            await conn.execute(DELETE_ITEMS, shop_id, only)
        subjects = [*only, *turns, *transcripts, *feedback, *corrections]
        quoted = [f"%{x}%" for x in (*sources, *(str(i) for i in only))]
        scrubbed = int((await conn.execute(SCRUB_AUDIT, shop_id, subjects, quoted)).split()[-1]) \
            if subjects else 0
        await conn.execute(DELETE_CORRECTIONS, shop_id, corrections)
        await conn.execute(DELETE_TRANSCRIPTS, shop_id, transcripts)
        await conn.execute(DELETE_TURNS, shop_id, turns)
        removed = {"turns": len(turns), "transcripts": len(transcripts),
                   "feedback": len(feedback), "corrections": len(corrections),
                   "queue_items": len(only), "queue_items_kept_without_their_signals":
                   len(shared), "out_of_scope_examples": examples,
                   "audit_entries_scrubbed": scrubbed}
        await audit.record(conn, shop_id=shop_id, actor=actor, action="user.erase",
                           subject_type="user", subject_id=None,
                           after={"user": hashlib.sha256(user_id.encode()).hexdigest()[:16],
                                  **removed})
    return removed
