"""Answering over HTTP: a paraphrase finds its entry, the answer names its source."""

from __future__ import annotations

import httpx

from tests.conftest import ShopKeys


async def test_paraphrase_is_answered_with_its_source(client: httpx.AsyncClient,
                                                      shop: ShopKeys) -> None:
    created = await client.post("/v1/knowledge", headers=shop.owner, json=[
        {"question": "How long does shipping take?",
         "answer": "Standard delivery takes 2 to 4 working days.", "category": "shipping"},
        {"question": "Can I return an item?",
         "answer": "Unused items can be returned within 30 days for a full refund."},
        {"question": "Which payment methods do you accept?",
         "answer": "We accept Visa, Mastercard and PayPal."},
    ])
    assert created.status_code == 201, created.text
    shipping_id = created.json()[0]["entry_id"]
    r = await client.post("/v1/answer", headers=shop.bot,
                          json={"question": "when will my parcel arrive?"})
    assert r.status_code == 200, r.text
    body = r.json()
    print(body)
    assert body["sources"][0]["entry_id"] == shipping_id
    assert body["tier"] in {"answer", "options"}
