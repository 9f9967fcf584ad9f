"""Training exports, streamed row by row: Q/A pairs, preference pairs, Label Studio tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from knowledge.errors import Invalid
from knowledge.runtime import Runtime

KINDS = ("qa", "preferences", "label-studio", "out-of-scope")
_FETCH = 500

# Approved answers, with the edits reviewers made; newest knowledge wins for repeated questions.
APPROVED_QA = """
SELECT id, question, proposed_content AS answer, category, source_type, status,
       confidence_score, observations, applied_knowledge_id, created_at
FROM learning_queue
WHERE shop_id = $1 AND kind = 'answer' AND status IN ('approved', 'applied')
  AND question IS NOT NULL AND proposed_content IS NOT NULL
ORDER BY created_at, id
"""
# What the bot said and what the owner said instead: TRL's DPOTrainer reads prompt, chosen,
# rejected.
PREFERENCE_PAIRS = """
SELECT id, question, corrected_answer, original_response, priority, correction_context,
       created_at
FROM owner_corrections
WHERE shop_id = $1 AND question IS NOT NULL AND original_response IS NOT NULL
  AND original_response <> corrected_answer
ORDER BY created_at, id
"""
REVIEW_TASKS = """
SELECT q.id, q.kind, q.status, q.source_type, q.question, q.proposed_content, q.confidence_score,
       q.priority, q.observations, q.created_at, kb.question AS nearest_question,
       kb.answer AS nearest_answer, q.nearest_similarity
FROM learning_queue AS q
LEFT JOIN knowledge_base_rag AS kb
       ON kb.shop_id = q.shop_id
      AND kb.entry_id = coalesce(q.conflict_entry_id, q.nearest_entry_id)
      AND kb.valid_to IS NULL
WHERE q.shop_id = $1 AND q.status = 'pending'
ORDER BY q.created_at, q.id
"""

# Questions the owner said the shop does not answer: negatives for an intent classifier or a
# refusal set for fine-tuning, with what customers are told instead.
OUT_OF_SCOPE = """
SELECT id, question, redirect, queue_item_id, created_at
FROM out_of_scope_examples WHERE shop_id = $1
ORDER BY id
"""


def _line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, ensure_ascii=False, default=str) + "\n").encode()


def media_type(kind: str) -> str:
    return "application/json" if kind == "label-studio" else "application/x-ndjson"


async def export(rt: Runtime, shop_id: int, kind: str) -> AsyncIterator[bytes]:
    """The export, read through a server-side cursor so memory stays flat however large the
    shop: JSON Lines for training data; for Label Studio, whose importer takes a JSON list of
    tasks, one task per line inside a list."""
    if kind not in KINDS:
        raise Invalid(f"export is one of {', '.join(KINDS)}", field="kind")
    query = {"qa": APPROVED_QA, "preferences": PREFERENCE_PAIRS,
             "label-studio": REVIEW_TASKS, "out-of-scope": OUT_OF_SCOPE}[kind]
    listed = kind == "label-studio"
    if listed:
        yield b"["
    first = True
    async with rt.pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(query, shop_id, prefetch=_FETCH):
            line = _line(_record(kind, row))
            if listed:
                line = (b"\n" if first else b",\n") + line.rstrip(b"\n")
            first = False
            yield line
    if listed:
        yield b"\n]\n"


def _record(kind: str, row: Any) -> dict[str, Any]:
    if kind == "qa":
        return {"messages": [{"role": "user", "content": row["question"]},
                             {"role": "assistant", "content": row["answer"]}],
                "question": row["question"], "answer": row["answer"],
                "category": row["category"],
                "meta": {"queue_item": str(row["id"]), "source": row["source_type"],
                         "status": row["status"], "confidence": row["confidence_score"],
                         "observations": row["observations"]}}
    if kind == "preferences":
        return {"prompt": row["question"], "chosen": row["corrected_answer"],
                "rejected": row["original_response"],
                "meta": {"correction": str(row["id"]), "priority": row["priority"],
                         "context": row["correction_context"]}}
    if kind == "out-of-scope":
        return {"question": row["question"], "label": "out_of_scope",
                "redirect": row["redirect"],
                "meta": {"example": row["id"], "created_at": row["created_at"],
                         "queue_item": None if row["queue_item_id"] is None
                         else str(row["queue_item_id"])}}
    return {"data": {"text": row["question"], "proposed_answer": row["proposed_content"],
                     "nearest_question": row["nearest_question"],
                     "nearest_answer": row["nearest_answer"], "kind": row["kind"],
                     "source": row["source_type"], "priority": row["priority"],
                     "observations": row["observations"],
                     "confidence": row["confidence_score"]},
            "meta": {"queue_item": str(row["id"]),
                     "nearest_similarity": row["nearest_similarity"]}}
