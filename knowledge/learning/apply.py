"""Applying approved queue items to the knowledge base: in batches, once each, crash-safe."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from knowledge.access import SYSTEM
from knowledge.answering.retrieval import cache_of
from knowledge.errors import Conflict, LearnkbError
from knowledge.learning.queue import COLUMNS, PHRASING_ONLY, QueueItem, item_from_row
from knowledge.runtime import Runtime
from knowledge.store import audit
from knowledge.store.db import Conn, Vector
from knowledge.store.entries import SELECT_LIVE as SELECT_LIVE_ENTRY
from knowledge.store.entries import (
    EntryDraft,
    add_entries,
    entries_with_answers,
    entry_with_answer,
    supersede_entry,
    validate,
)
from knowledge.store.locks import try_advisory_lock

log = logging.getLogger(__name__)

LOCK_NAME = "job:apply"
# Question variants an entry keeps; learning adds the newest, the oldest give way.
MAX_VARIANTS = 50

# Urgent corrections first, then in the order they were approved.
CLAIM_APPROVED = f"""
SELECT {COLUMNS}, embedding FROM learning_queue
WHERE status = 'approved' AND kind = 'answer' AND ($2::integer IS NULL OR shop_id = $2)
ORDER BY (priority = 'urgent') DESC, reviewed_at, created_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
# A batch may hold items of several shops: each row is named by its shop and id.
MARK_APPLIED = """
UPDATE learning_queue AS q SET status = 'applied', applied_at = now(),
                               applied_knowledge_id = t.knowledge_id
FROM unnest($1::integer[], $2::uuid[], $3::uuid[]) AS t(shop_id, id, knowledge_id)
WHERE q.shop_id = t.shop_id AND q.id = t.id
"""
BACK_TO_REVIEW = """
UPDATE learning_queue AS q SET status = 'pending', reviewed_at = NULL,
                               review_note = 'could not be applied: ' || t.reason
FROM unnest($1::integer[], $2::uuid[], $3::text[]) AS t(shop_id, id, reason)
WHERE q.shop_id = t.shop_id AND q.id = t.id
"""
MARK_CORRECTIONS_APPLIED = """
UPDATE owner_corrections AS c SET applied_at = now()
FROM unnest($1::integer[], $2::uuid[]) AS t(shop_id, id)
WHERE c.shop_id = t.shop_id AND c.id = t.id AND c.applied_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    created: int
    superseded: int
    returned_to_review: int = 0


async def apply_approved(rt: Runtime, batch_size: int = 500,
                         shop_id: int | None = None) -> ApplyResult:
    """Move every approved item into knowledge_base_rag; returns what was done.

    One replica applies at a time (an advisory lock); items are claimed with FOR UPDATE SKIP
    LOCKED, and each batch is one transaction: the knowledge written and the items marked
    applied commit together, so a crash half-way leaves the batch approved and a re-run
    applies each item exactly once. `apply_workers` batches run side by side (most of a
    batch is PostgreSQL inserting vectors into the graph, one core per batch); what each
    writes is reserved (`InFlight`), so two batches never make twin entries or change one
    entry at once.
    """
    totals = [0, 0, 0, 0]   # applied, created, superseded, returned
    flight = InFlight()
    claiming = asyncio.Lock()

    async def worker() -> None:
        while True:
            batch, since = flight.begin()
            reserve = flight.view(batch, since)
            committed = False
            touched: set[int] = set()
            try:
                async with rt.pool.acquire() as conn:
                    async with conn.transaction():
                        async with claiming:
                            rows = await conn.fetch(CLAIM_APPROVED, batch_size, shop_id)
                            # An item that changes an entry takes that entry in the order the
                            # items were claimed (approved): a later answer of another batch
                            # waits, and never lands before an earlier one to be overwritten.
                            waiting = {r["id"] for r in rows if r["target_entry_id"] is not None
                                       and not reserve({("entry", r["shop_id"],
                                                         r["target_entry_id"])})}
                        if not rows:
                            return
                        items = [item_from_row(r) for r in rows if r["id"] not in waiting]
                        touched = {i.shop_id for i in items}
                        vectors = {r["id"]: r["embedding"] for r in rows
                                   if r["embedding"] is not None}
                        made, replaced, bounced, deferred = await _apply_batch(
                            rt, conn, items, vectors, reserve) if items else (0, 0, 0, 0)
                    committed = True
            finally:
                await flight.finish(batch, committed)
                if committed:
                    for changed in touched:
                        cache_of(rt).forget(changed)
            for i, n in enumerate((len(items) - bounced - deferred, made, replaced, bounced)):
                totals[i] += n
            if deferred or waiting:
                # Its deferred items wait on another batch's entries: claimed again once that
                # batch is done, not over and over meanwhile.
                await flight.other_finished(batch)

    async with try_advisory_lock(rt.pool, LOCK_NAME) as locked:
        if locked is None:
            return ApplyResult(0, 0, 0, 0)
        # A batch that fails cancels the others (their transactions roll back) before the
        # lock is given up: no batch of this run outlives it.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, rt.settings.apply_workers)):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            for other in failed.exceptions[1:]:
                log.error("another apply batch failed as well", exc_info=other)
            # The batch's own error, as one worker alone would raise it (the job's record
            # and the callers' handlers expect it, not a group).
            raise failed.exceptions[0] from None
    applied, created, superseded, returned = totals
    if applied:
        log.info("applied %d learning items (%d new entries, %d new versions)", applied,
                 created, superseded)
    return ApplyResult(applied, created, superseded, returned)


# What a batch writes: ("entry", shop, entry_id) for an entry it changes, ("answer", shop,
# text) for an answer it gives an entry, new or changed.
Key = tuple[str, int, object]


@dataclass(slots=True)
class InFlight:
    """The entries and answers that batches being applied side by side write.

    A batch does not see another's uncommitted entries, and may have read an entry before
    another batch changed it: an item whose entry or answer another batch holds, or wrote
    after this batch began reading, is deferred to a later batch instead of making a twin
    entry or losing a change. Keys are released when their batch ends."""

    held: dict[Key, int] = field(default_factory=dict)
    # Batches committed so far, each with the keys it wrote, and the batches still running
    # with the count of commits they had seen when they began.
    commits: int = 0
    written: list[tuple[int, frozenset[Key]]] = field(default_factory=list)
    running: dict[int, int] = field(default_factory=dict)
    _next: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def begin(self) -> tuple[int, int]:
        self._next += 1
        self.running[self._next] = self.commits
        return self._next, self.commits

    def view(self, batch: int, since: int) -> Reserve:
        def reserve(keys: set[Key]) -> bool:
            if any(self.held.get(k, batch) != batch for k in keys):
                return False
            if any(n > since and not keys.isdisjoint(done) for n, done in self.written):
                return False
            for k in keys:
                self.held[k] = batch
            return True
        return reserve

    async def finish(self, batch: int, committed: bool) -> None:
        mine = frozenset(k for k, b in self.held.items() if b == batch)
        for k in mine:
            del self.held[k]
        del self.running[batch]
        if committed and mine:
            self.commits += 1
            self.written.append((self.commits, mine))
        # Only batches that began before a commit need to know what it wrote.
        oldest = min(self.running.values(), default=self.commits)
        self.written = [(n, keys) for n, keys in self.written if n > oldest]
        async with self._changed:
            self._changed.notify_all()

    async def other_finished(self, batch: int) -> None:
        """Wait until no batch that was running when `batch` ended is running still."""
        others = set(self.running)
        async with self._changed:
            await self._changed.wait_for(lambda: not others & set(self.running))


Reserve = Callable[[set[Key]], bool]


def _answer(item: QueueItem) -> str:
    return (item.proposed_content or "").strip()


def _draft(item: QueueItem, vectors: dict[UUID, Vector]) -> EntryDraft:
    return EntryDraft(answer=item.proposed_content or "", question=item.question,
                      category=item.category, source="learning",
                      metadata={"queue_item": str(item.id)},
                      # The item's question was embedded when it was queued.
                      known_vectors={item.question: vectors[item.id]}
                      if item.question and item.id in vectors else {})


def _merged_draft(items: list[QueueItem], vectors: dict[UUID, Vector]) -> EntryDraft:
    draft = _draft(items[0], vectors)
    for other in items[1:]:
        question = other.question
        if question and question != draft.question and question not in draft.variants:
            draft.variants.append(question)
            if other.id in vectors:
                draft.known_vectors[question] = vectors[other.id]
    draft.variants = draft.variants[-MAX_VARIANTS:]
    return draft


async def _apply_batch(rt: Runtime, conn: Conn, items: list[QueueItem],
                       vectors: dict[UUID, Vector],
                       reserve: Reserve) -> tuple[int, int, int, int]:
    """Apply a claimed batch. An item that cannot be applied (say, its answer breaks a limit)
    goes back to review with the reason instead of blocking every item behind it; one whose
    entry or answer another batch is writing stays approved for a later batch (deferred)."""
    knowledge_of: dict[UUID, UUID] = {}
    failed: dict[UUID, str] = {}
    fresh: dict[int, list[QueueItem]] = defaultdict(list)
    replaced = deferred = 0
    limits = (rt.settings.max_answer_chars, rt.settings.max_question_chars)
    # Which live entry already gives each untargeted item's answer: one query per shop.
    known_answers = {shop_id: await entries_with_answers(conn, shop_id, [
        i.proposed_content or "" for i in items
        if i.shop_id == shop_id and i.target_entry_id is None]) for shop_id in
        {i.shop_id for i in items}}
    # Answers this batch gave existing entries: (shop, answer) -> entry.
    given_answers: dict[tuple[int, str], UUID] = {}

    async def join(item: QueueItem, live: asyncpg.Record) -> None:
        """The item's question joins a live entry (with its answer, unless the same)."""
        nonlocal replaced, deferred
        asked = [live["question"], *live["variants"]]
        variants = list(live["variants"])
        if item.question and item.question not in asked:
            variants.append(item.question)
        # An item that only brings a phrasing of an entry's answer leaves that answer as it is
        # now (an owner may have edited it since the item was queued).
        same_answer = (item.metadata.get(PHRASING_ONLY)
                       or item.proposed_content == live["answer"])
        keys: set[Key] = {("entry", item.shop_id, live["entry_id"])}
        if not same_answer:
            keys.add(("answer", item.shop_id, _answer(item)))
        if not reserve(keys):
            deferred += 1
            return
        try:
            async with conn.transaction():
                new = await supersede_entry(
                    rt, item.shop_id, live["entry_id"], SYSTEM,
                    answer=None if same_answer else item.proposed_content,
                    variants=variants[-MAX_VARIANTS:], reason=f"learning queue item {item.id}",
                    source="learning", known_vectors=_draft(item, vectors).known_vectors,
                    expected_version=live["version"], conn=conn)
        except Conflict:
            # Changed (by its owner, say) since it was read: the variants above would drop
            # that change. A later batch reads the entry again.
            deferred += 1
            return
        except LearnkbError as exc:
            failed[item.id] = exc.detail
            return
        knowledge_of[item.id] = new.id
        replaced += 1
        if not same_answer and _answer(item):
            given_answers[(item.shop_id, _answer(item))] = live["entry_id"]

    for item in items:
        try:
            validate(_draft(item, vectors), *limits)
        except LearnkbError as exc:
            failed[item.id] = exc.detail
            continue
        live = None
        if item.target_entry_id is not None:
            live = await conn.fetchrow(SELECT_LIVE_ENTRY, item.shop_id, item.target_entry_id)
        if live is None and item.proposed_content:
            # An answer some entry already gives (a gap answered with it, say): its question
            # joins that entry instead of starting a twin.
            same = known_answers[item.shop_id].get(_answer(item))
            if same is None and item.target_entry_id is not None:  # its entry was retired
                same = await entry_with_answer(conn, item.shop_id, item.proposed_content)
            if same is not None:
                live = await conn.fetchrow(SELECT_LIVE_ENTRY, item.shop_id, same)
                if live is not None and live["answer"] != _answer(item):
                    live = None  # changed by an earlier item of this batch
        if live is None:
            if not reserve({("answer", item.shop_id, _answer(item))}):
                deferred += 1
                continue
            fresh[item.shop_id].append(item)
            continue
        await join(item, live)
    created = 0
    for shop_id, group in fresh.items():
        # An answer an item of this batch gave an existing entry (in either order): an item
        # that proposes it as new joins that entry too, instead of starting its twin.
        making = []
        for item in group:
            given = given_answers.get((shop_id, _answer(item)))
            live = (await conn.fetchrow(SELECT_LIVE_ENTRY, shop_id, given)
                    if given is not None else None)
            if live is not None and live["answer"] == _answer(item):
                await join(item, live)
            else:
                making.append(item)
        if not making:
            continue
        # Items of one batch with the same answer make one entry: the first one's question,
        # the others' as its variants.
        by_answer: dict[str, list[QueueItem]] = defaultdict(list)
        for item in making:
            by_answer[_answer(item)].append(item)
        drafts = [_merged_draft(twins, vectors) for twins in by_answer.values()]
        async with conn.transaction():
            entries = await add_entries(rt, shop_id, drafts, SYSTEM, conn=conn,
                                        audit_action="knowledge.create_from_learning")
        created += len(entries)
        for twins, entry in zip(by_answer.values(), entries, strict=True):
            for item in twins:
                knowledge_of[item.id] = entry.id
    done = [i for i in items if i.id in knowledge_of]
    bounced = [i for i in items if i.id in failed]
    if bounced:
        await conn.execute(BACK_TO_REVIEW, [i.shop_id for i in bounced],
                           [i.id for i in bounced], [failed[i.id] for i in bounced])
    await conn.execute(MARK_APPLIED, [i.shop_id for i in done], [i.id for i in done],
                       [knowledge_of[i.id] for i in done])
    corrections = [(i.shop_id, i.source_id) for i in done
                   if i.source_type == "correction" and i.source_id is not None]
    if corrections:
        await conn.execute(MARK_CORRECTIONS_APPLIED, [s for s, _ in corrections],
                           [c for _, c in corrections])
    for shop_id in {i.shop_id for i in items}:
        await audit.record_many(
            conn, shop_id=shop_id, actor=SYSTEM, action="queue.apply", subject_type="queue",
            changes=[(i.id, {"status": "approved"},
                      {"status": "applied", "knowledge_id": str(knowledge_of[i.id])})
                     for i in done if i.shop_id == shop_id])
        await audit.record_many(
            conn, shop_id=shop_id, actor=SYSTEM, action="queue.apply_failed",
            subject_type="queue",
            changes=[(i.id, {"status": "approved"}, {"status": "pending",
                                                     "reason": failed[i.id]})
                     for i in items if i.id in failed and i.shop_id == shop_id])
    return created, replaced, len(failed), deferred
