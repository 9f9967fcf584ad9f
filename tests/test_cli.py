"""The `learnkb` command against the test database: shops, keys, knowledge, ingest, jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

LEARNKB = str(Path(sys.executable).parent / "learnkb")


def _run(settings_env: dict[str, str], *args: str, ok: bool = True) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    env.update(settings_env)
    done = subprocess.run([LEARNKB, *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    if not ok:
        return done
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip()
    return json.loads(out) if out.startswith(("{", "[")) else out


async def test_cli_manages_shops_keys_and_knowledge(database_url: str, data_dir: Path,
                                              client: httpx.AsyncClient,
                                              tmp_path: Path) -> None:
    env = {"LEARNKB_DATABASE_URL": database_url, "LEARNKB_DATA_DIR": str(data_dir),
           "LEARNKB_LOG_LEVEL": "warning"}
    assert _run(env, "migrate") == "database is up to date"
    slug = f"cli-{uuid.uuid4().hex[:6]}"
    shop = _run(env, "shops", "create", slug, "--name", "CLI Shop")
    assert shop["slug"] == slug
    assert slug in [s["slug"] for s in _run(env, "shops", "list")]
    made = _run(env, "keys", "create", "--role", "bot", "--shop", slug, "--name", "cli bot")
    secret = made["secret"]
    assert secret.startswith("lkb_") and made["key"]["role"] == "bot"
    listed = _run(env, "keys", "list", "--shop", slug)
    assert [k["id"] for k in listed] == [made["key"]["id"]] and secret not in json.dumps(listed)

    entry = _run(env, "knowledge", "add", "--shop", slug, "--question", "Do you repair kettles?",
                 "--answer", "Yes, send it to our workshop.", "--variant", "kettle repair")
    updated = _run(env, "knowledge", "update", entry["entry_id"], "--shop", slug,
                   "--answer", "Yes, repairs take a week.", "--reason", "new workshop")
    assert updated["version"] == 2
    history = _run(env, "knowledge", "history", entry["entry_id"], "--shop", slug)
    assert [h["answer"] for h in history] == ["Yes, send it to our workshop.",
                                              "Yes, repairs take a week."]
    doc = tmp_path / "hours.md"
    doc.write_text("# Hours\n\nWe are open on Sundays from 10 to 2.\n")
    ingested = _run(env, "ingest", str(doc), "--shop", slug)
    assert ingested[0]["changed"] and ingested[0]["chunks_added"] == 1
    assert not _run(env, "ingest", str(doc), "--shop", slug)[0]["changed"]
    assert "refreshed" in _run(env, "jobs", "run", "refresh-metrics")

    _run(env, "knowledge", "delete", entry["entry_id"], "--shop", slug)
    assert [e["question"] for e in _run(env, "knowledge", "list", "--shop", slug)] == [None]
    _run(env, "keys", "revoke", made["key"]["id"])
    revoked = await client.post("/v1/answer", json={"question": "hi"},
                                headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401

    failed = _run(env, "shops", "create", "Not A Slug", ok=False)
    assert failed.returncode == 2 and "slug" in failed.stderr


async def test_cli_imports_a_folder_of_call_transcripts(database_url: str, data_dir: Path,
                                                        client: httpx.AsyncClient,
                                                        tmp_path: Path) -> None:
    env = {"LEARNKB_DATABASE_URL": database_url, "LEARNKB_DATA_DIR": str(data_dir),
           "LEARNKB_LOG_LEVEL": "warning"}
    slug = f"calls-{uuid.uuid4().hex[:6]}"
    _run(env, "shops", "create", slug)
    calls = Path(__file__).parent / "transcripts"
    folder = tmp_path / "calls"
    folder.mkdir()
    for name in ("angry_call.txt", "delivery.srt", "bot_speaks.vtt", "unanswered.json"):
        (folder / name).write_text((calls / name).read_text())
    (folder / "broken.json").write_text("[not json")
    (folder / "notes.pdf").write_bytes(b"%PDF ignored: not a transcript format")
    done = _run(env, "transcripts", "import", str(folder), "--shop", slug, ok=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["transcripts"] == 4 and result["failed"] == 1
    assert result["pairs"] == 4 and result["unanswered"] == 1
    assert result["failures"][0]["file"] == "broken.json"
    assert "transcripts" in done.stderr  # the progress bar
    rerun = json.loads(_run(env, "transcripts", "import", str(folder), "--shop", slug,
                            ok=False).stdout)
    assert rerun["transcripts"] == 0 and rerun["already_imported"] == 4
