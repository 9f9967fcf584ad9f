"""`learnkb backup` and `learnkb restore`: a shop built in one data directory answers the same
from a fresh one after a restore, and restores that would lose or break data are refused."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from evaluation.instance import free_port, learnkb_command, served

QUESTIONS = ["can you deliver my order to Norway?", "how many days does delivery take?",
             "my kettle has limescale, what do I do?", "what is the capital of France?"]
SEARCHES = ["warranty grinder", "returns", "Norway"]
FAQ = (b"# Delivery\n\nOrders leave our warehouse the next working day and arrive in 2 to 4 "
       b"working days within Germany.\n\n# Returns\n\nUnused items can be returned within 30 "
       b"days for a full refund; we send a prepaid label.\n")


def _env(data_dir: Path, models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    # One ONNX export of the model for both data directories; the databases are their own.
    env.update(LEARNKB_DATA_DIR=str(data_dir), LEARNKB_MODEL_CACHE=str(models),
               LEARNKB_LOG_LEVEL="warning")
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([learnkb_command(), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _ok(env: dict[str, str], *args: str) -> Any:
    done = _cli(env, *args)
    assert done.returncode == 0, f"learnkb {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


def _refused(env: dict[str, str], *args: str) -> str:
    """The one line a refused command says (stderr may also hold library warnings)."""
    done = _cli(env, *args)
    assert done.returncode == 2, f"exit {done.returncode}: {done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("learnkb: ")]
    assert len(said) == 1, done.stderr
    return said[0]


@contextmanager
def _serve(env: dict[str, str]) -> Iterator[httpx.Client]:
    log_path = Path(env["LEARNKB_DATA_DIR"]).parent / f"{Path(env['LEARNKB_DATA_DIR']).name}.log"
    with log_path.open("a") as log:
        try:
            with served(env, free_port(), ready_seconds=180, output=log) as (base, _), \
                    httpx.Client(base_url=base, timeout=60) as client:
                yield client
        except RuntimeError as exc:
            raise AssertionError(f"{exc}: {log_path.read_text()}") from exc


def _sources(found: list[dict[str, Any]]) -> list[tuple[str, float, float | None]]:
    return [(s["entry_id"], s["score"], s["similarity"]) for s in found]


def _observe(client: httpx.Client, bot: dict[str, str], owner: dict[str, str],
             ) -> dict[str, Any]:
    """What the bot answers and finds, and the shop's queue, as comparable values (asked with
    `learn: false`, so that asking opens no knowledge gap in the queue)."""
    answers = []
    for question in QUESTIONS:
        r = client.post("/v1/answer", headers=bot, json={"question": question, "learn": False})
        assert r.status_code == 200, r.text
        body = r.json()
        answers.append({"tier": body["tier"], "confidence": body["confidence"],
                        "answer": body["answer"], "sources": _sources(body["sources"]),
                        "options": _sources(body["options"])})
    searches = []
    for query in SEARCHES:
        r = client.get("/v1/search", headers=bot, params={"q": query})
        assert r.status_code == 200, r.text
        searches.append({"path": r.json()["path"], "results": _sources(r.json()["results"])})
    queue = client.get("/v1/queue", headers=owner, params={"limit": 100})
    assert queue.status_code == 200, queue.text
    items = [{k: item[k] for k in ("id", "status", "kind", "source_type", "question",
                                   "proposed_content", "confidence", "observations",
                                   "target_entry_id")}
             for item in queue.json()["items"]]
    return {"answers": answers, "searches": searches, "queue": items}


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equal, floats to 1e-6."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@dataclass(frozen=True)
class Source:
    dump: Path
    models: Path
    report: dict[str, Any]
    seen: dict[str, Any]
    admin: dict[str, str]
    owner: dict[str, str]
    bot: dict[str, str]
    turn_id: str
    slug: str


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A shop with entries, a document, queue items and answered turns, backed up while
    `learnkb serve` runs on it."""
    root = tmp_path_factory.mktemp("backup")
    models = root / "models"
    env = _env(root / "source", models)
    admin = {"Authorization": f"Bearer {_ok(env, 'keys', 'create', '--role', 'admin')['secret']}"}
    with _serve(env) as client:
        slug = "brew"
        assert client.post("/v1/shops", headers=admin,
                           json={"slug": slug, "name": "Brew"}).status_code == 201
        made = {role: client.post("/v1/keys", headers=admin,
                                  json={"role": role, "shop": slug}).json()["secret"]
                for role in ("owner", "bot")}
        owner = {"Authorization": f"Bearer {made['owner']}"}
        bot = {"Authorization": f"Bearer {made['bot']}"}
        r = client.post("/v1/knowledge", headers=owner, json=[
            {"question": "Do you ship to Norway?", "answer": "We only ship within the EU.",
             "variants": ["delivery to Norway"]},
            {"question": "How do I descale the Aero kettle?",
             "answer": "Boil a mix of water and citric acid, rinse twice.",
             "category": "care"},
            {"question": "What warranty do grinders have?",
             "answer": "Two years on every grinder, burrs excluded."}])
        assert r.status_code == 201, r.text
        r = client.post("/v1/documents", headers=owner,
                        files={"file": ("faq.md", FAQ, "text/markdown")})
        assert r.status_code == 201 and r.json()["chunks_added"] >= 2, r.text
        answered = client.post("/v1/answer", headers=bot,
                               json={"question": "Do you ship to Norway?"}).json()
        assert answered["tier"] == "answer", answered
        turn_id = answered["turn_id"]
        # Queue items of three kinds: feedback on the turn, a correction, a suggestion.
        assert client.post("/v1/feedback", headers=bot, json={
            "turn_id": turn_id, "type": "thumbs_down"}).status_code == 201
        assert client.post("/v1/corrections", headers=owner, json={
            "turn_id": turn_id, "priority": "urgent",
            "corrected_answer": "Yes, since March we ship to Norway in 5 to 8 days."},
        ).status_code == 201
        assert client.post("/v1/knowledge/suggestions", headers=owner, json={
            "question": "Do you sell paper filters?", "answer": "Yes, packs of 100.",
            "confidence": 40}).status_code == 201
        seen = _observe(client, bot, owner)
        assert {"answer", "fallback"} <= {a["tier"] for a in seen["answers"]}
        assert len(seen["queue"]) >= 3
        # Backed up while serving: pg_dump reads a snapshot.
        dump = root / "brew.dump"
        report = _ok(env, "backup", str(dump))
    return Source(dump, models, report, seen, admin, owner, bot, turn_id, slug)


def test_restore_into_a_fresh_data_directory_answers_the_same(source: Source,
                                                              tmp_path: Path) -> None:
    assert source.report["rows"]["shops"] == 1 and source.report["rows"]["documents"] == 1
    assert source.report["rows"]["knowledge_base_rag"] >= 5
    assert source.report["rows"]["learning_queue"] >= 3
    assert source.report["file_bytes"] == source.dump.stat().st_size > 0
    assert not source.dump.with_name(source.dump.name + ".partial").exists()

    env = _env(tmp_path / "fresh", source.models)
    restored = _ok(env, "restore", str(source.dump))
    # The same rows as the backup saw, and nothing replaced in an empty database.
    assert restored["rows"] == source.report["rows"]
    assert restored["tables"] == source.report["tables"]
    assert restored["replaced_shops"] == 0 and restored["migrations_applied"] == []
    assert restored["statistics"] == "restored"

    with _serve(env) as client:
        _same(_observe(client, source.bot, source.owner), source.seen)
        # Every key of the source still works, and the answered turn takes feedback.
        assert [s["slug"] for s in client.get("/v1/shops", headers=source.admin).json()
                ] == [source.slug]
        assert client.post("/v1/feedback", headers=source.bot, json={
            "turn_id": source.turn_id, "type": "thumbs_up"}).status_code == 201
        # A served database is never restored over, not even with --force.
        said = _refused(env, "restore", str(source.dump))
        assert "holds 1 shop" in said and "--force" in said
        said = _refused(env, "restore", "--force", str(source.dump))
        assert "running learnkb" in said


def test_restore_refuses_what_would_lose_or_break_data(source: Source, tmp_path: Path) -> None:
    env = _env(tmp_path / "data", source.models)
    assert "no such file" in _refused(env, "restore", str(tmp_path / "missing.dump"))
    text = tmp_path / "notes.dump"
    text.write_text("not a dump\n")
    assert "not a pg_dump archive" in _refused(env, "restore", str(text))
    assert "not a folder" in _refused(env, "backup", str(tmp_path / "no" / "such.dump"))
    # A data directory learnkb never migrated has nothing to back up.
    assert "nothing to back up" in _refused(env, "backup", str(tmp_path / "empty.dump"))

    _ok(env, "restore", str(source.dump))
    said = _refused(env, "restore", str(source.dump))
    assert said == ("learnkb: the database already holds 1 shop(s); restoring replaces "
                    "everything in it: add --force to do so")
    # A dump damaged in its data fails part-way; the transaction leaves the database as it was.
    damaged = bytearray(source.dump.read_bytes())
    for i in range(len(damaged) - 3000, len(damaged) - 2000):
        damaged[i] ^= 0x5A
    broken = tmp_path / "damaged.dump"
    broken.write_bytes(bytes(damaged))
    assert "the database is unchanged" in _refused(env, "restore", "--force", str(broken))
    entries = _ok(env, "knowledge", "list", "--shop", source.slug, "--limit", "100")
    assert len(entries) == source.report["rows"]["knowledge_base_rag"]
    again = _ok(env, "restore", "--force", str(source.dump))
    assert again["replaced_shops"] == 1 and again["rows"] == source.report["rows"]
