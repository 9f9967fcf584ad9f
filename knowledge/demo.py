"""The demo shop: a small coffee-gear shop, its FAQ document, a few entries and a bot key."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from knowledge.access import CLI_ADMIN, Role
from knowledge.errors import NotFound
from knowledge.runtime import Runtime
from knowledge.store import entries, keys
from knowledge.store.documents import ingest_document
from knowledge.store.shops import create_shop, get_shop

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_SLUG = "demo"
DEMO_NAME = "Brew & Co. (demo)"


@dataclass(frozen=True, slots=True)
class Demo:
    shop_id: int
    bot_key: str
    key_file: Path


async def load_demo(rt: Runtime) -> Demo:
    """Create or refresh the demo shop; idempotent, so every start may call it."""
    try:
        shop = await get_shop(rt.pool, DEMO_SLUG)
    except NotFound:
        shop = await create_shop(rt.pool, DEMO_SLUG, DEMO_NAME)
    await ingest_document(rt, shop.id, "faq.md", (DEMO_DIR / "faq.md").read_bytes(),
                          "text/markdown", CLI_ADMIN)
    manual = [e for e in (await entries.list_entries(rt.pool, shop.id, limit=500))[0]
              if e.source == "demo"]
    if not manual:
        drafts = [entries.EntryDraft(source="demo", **item) for item in
                  json.loads((DEMO_DIR / "entries.json").read_text(encoding="utf-8"))]
        await entries.add_entries(rt, shop.id, drafts, CLI_ADMIN)
    key_file = rt.settings.data_dir.resolve() / "demo-key"
    secret = key_file.read_text().strip() if key_file.exists() else ""
    try:
        principal = await keys.authenticate(rt.pool, secret)
        valid = principal.shop_id == shop.id
    except Exception:
        valid = False
    if not valid:
        made = await keys.create_key(rt.pool, Role.BOT, shop.id, "demo bot")
        secret = made.secret
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secret + "\n")
        key_file.chmod(0o600)
    return Demo(shop_id=shop.id, bot_key=secret, key_file=key_file)
