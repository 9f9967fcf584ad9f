"""The review listing: the narrow copy of each item it filters and sorts on follows every change
to the item, and a list page shows each item's first signals only."""

from __future__ import annotations

import httpx

from app.pages.queue import LISTED_SIGNALS
from knowledge.access import CLI_ADMIN
from knowledge.learning import review
from knowledge.learning.queue import ItemDraft, QueueItem, submit
from knowledge.runtime import Runtime
from knowledge.store import shops
from tests.conftest import ShopKeys, make_shop
from tests.test_pages import secret_of, sign_in

# Items whose listing row is missing, left over or says something else than the item.
OUT_OF_STEP = """
SELECT q.id AS item, l.id AS listed FROM learning_queue AS q
FULL JOIN learning_queue_listing AS l ON l.id = q.id
WHERE coalesce(q.shop_id, l.shop_id) = $1
  AND (q.id IS NULL OR l.id IS NULL
       OR (q.shop_id, q.status, q.kind, q.source_type, q.priority, q.observations,
           q.confidence_score, q.nearest_similarity, q.conflict_entry_id IS NOT NULL,
           q.created_at)
          IS DISTINCT FROM
          (l.shop_id, l.status, l.kind, l.source_type, l.priority, l.observations,
           l.confidence_score, l.nearest_similarity, l.conflict, l.created_at))
"""


async def test_the_listing_follows_every_change_to_an_item(runtime: Runtime) -> None:
    keys = await make_shop(runtime, "listing")
    shop = await shops.get_shop(runtime.pool, keys.shop_id)

    async def item(question: str, priority: str = "normal") -> QueueItem:
        submitted = await submit(runtime, shop, ItemDraft(
            kind="answer", source_type="manual", question=question,
            answer=f"{question} Yes.", confidence=40, priority=priority), CLI_ADMIN)
        assert submitted.item is not None
        return submitted.item

    kettle = await item("Do you sell kettle model K100?")
    toaster = await item("Do you sell toaster model T200?")
    lamp = await item("Does lamp L142 take LED bulbs?")
    grinder = await item("Does grinder G7 grind for espresso?")
    gone = await item("Is the mug M3 dishwasher-safe?")
    # A repeat merges (observations, confidence), an urgent one raises the priority too.
    await item("Do you sell toaster model T200?")
    await item("Do you sell toaster model T200?", priority="urgent")
    await review.approve(runtime, shop.id, kettle.id, CLI_ADMIN)
    await review.reject(runtime, shop.id, lamp.id, CLI_ADMIN, "we do not sell lamps")
    await review.merge(runtime, shop.id, grinder.id, toaster.id, CLI_ADMIN)
    await runtime.pool.execute("UPDATE learning_queue SET created_at = '2026-01-01' "
                               "WHERE id = $1", toaster.id)
    await runtime.pool.execute("DELETE FROM learning_queue WHERE id = $1", gone.id)

    assert await runtime.pool.fetch(OUT_OF_STEP, shop.id) == []
    listed = {r["id"]: (r["status"], r["priority"], r["observations"]) for r in
              await runtime.pool.fetch("SELECT id, status, priority, observations "
                                       "FROM learning_queue_listing WHERE shop_id = $1", shop.id)}
    assert listed == {kettle.id: ("approved", "normal", 1), toaster.id: ("pending", "urgent", 4),
                      lamp.id: ("rejected", "normal", 1), grinder.id: ("merged", "normal", 1)}
    views, total = await review.list_items(runtime.pool, shop.id,
                                           review.QueueFilter(sort="observations"), 2, 0)
    assert total == 4 and views[0].item.id == toaster.id


async def test_a_list_shows_the_first_signals_and_the_item_page_all(
        client: httpx.AsyncClient, runtime: Runtime, shop: ShopKeys) -> None:
    target = await shops.get_shop(runtime.pool, shop.shop_id)
    draft = ItemDraft(kind="gap", source_type="gap", question="Do you deliver on Sundays?")
    for _ in range(LISTED_SIGNALS + 3):
        last = await submit(runtime, target, draft, CLI_ADMIN)
    assert last.item is not None and len(last.item.signals) == LISTED_SIGNALS + 3
    browser, _ = await sign_in(client, secret_of(shop.owner))
    listing = await browser.get("/admin/queue")
    page = await browser.get(f"/admin/queue/{last.item.id}")
    await browser.aclose()
    assert listing.status_code == 200 and page.status_code == 200
    assert f"Sources ({LISTED_SIGNALS + 3} signals" in listing.text
    assert f"the first {LISTED_SIGNALS} signals here" in listing.text
    assert "3 more signals and their turns" in listing.text
    assert listing.text.count('<span class="badge">gap</span>') == LISTED_SIGNALS
    assert page.text.count('<span class="badge">gap</span>') == LISTED_SIGNALS + 3
    assert "more signals" not in page.text
