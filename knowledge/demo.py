"""The demo shop: a small coffee-gear shop, its FAQ document, a few entries, a bot key and an
owner key (for the review pages)."""

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
    owner_key_file: Path


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
    owner_file = rt.settings.data_dir.resolve() / "demo-owner-key"
    secret = await _key_in_file(rt, key_file, Role.BOT, shop.id, "demo bot")
    await _key_in_file(rt, owner_file, Role.OWNER, shop.id, "demo owner")
    return Demo(shop_id=shop.id, bot_key=secret, key_file=key_file, owner_key_file=owner_file)


async def _key_in_file(rt: Runtime, key_file: Path, role: Role, shop_id: int,
                       name: str) -> str:
    """The key kept in `key_file`, made (and written, readable by its owner only) when the
    file holds none that still works for this shop and role."""
    secret = _read_key(key_file)
    try:
        principal = await keys.authenticate(rt.pool, secret)
        valid = principal.shop_id == shop_id and principal.role is role
    except Exception:
        valid = False
    if not valid:
        made = await keys.create_key(rt.pool, role, shop_id, name)
        secret = made.secret
        _write_key(key_file, secret)
    return secret


def _read_key(key_file: Path) -> str:
    return key_file.read_text().strip() if key_file.exists() else ""


def _write_key(key_file: Path, secret: str) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
