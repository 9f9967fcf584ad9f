"""Schemathesis against the served OpenAPI document: every operation, stateless and stateful, as
an admin and as a shop's owner; no 500, no status, media type or body outside the document."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from knowledge.runtime import Runtime
from tests.conftest import ShopKeys, make_shop

# Fixed, so a failure here reproduces with the same cases (the CLI prints `--seed` and a curl
# line per failure); no example database, so earlier runs do not steer this one.
SEED = 20261201
# Per operation, in the fuzzing phase (positive and negative cases); the coverage phase adds
# its own boundary cases. The stateful phase runs this many scenarios of valid requests, each
# up to STATEFUL_STEPS calls long, following the links schemathesis infers (a created entry's
# id into GET /v1/knowledge/{entry_id}...). A run sends about 3,500 requests.
MAX_EXAMPLES = 10
STATEFUL_SCENARIOS = 40
STATEFUL_STEPS = 10
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
# Generous: the first calls load the model's caches, and the machine may be busy.
RUN_TIMEOUT = 600
CALL = ("Agent: Good morning, Brew & Co.\nCustomer: How long does delivery take?\n"
        "Agent: Standard delivery takes 2 to 4 working days.\n")


async def _seed(client: httpx.AsyncClient, shop: ShopKeys) -> dict[str, list[Any]]:
    """Real objects in the shop, so that generated cases also reach past a 404: schemathesis
    draws these identifiers half of the time (the other half its own)."""
    entries = (await client.post("/v1/knowledge", headers=shop.owner, json=[
        {"question": "How long does delivery take?", "answer": "2 to 4 working days."},
        {"question": "Can I return a grinder?", "answer": "Within 30 days, unused."},
    ])).json()
    turn = (await client.post("/v1/answer", headers=shop.bot, json={
        "question": "how long does delivery take?", "conversation_id": "fuzz-conversation",
        "user_id": "fuzz-customer"})).json()
    items = []
    for question, answer in (("Do you sell descaler?", "Yes, the Brew descaler."),
                             ("Is there a warranty?", "Two years on machines."),
                             ("Do you ship abroad?", "Within the EU.")):
        made = (await client.post("/v1/knowledge/suggestions", headers=shop.owner, json={
            "question": question, "answer": answer, "confidence": 40})).json()
        items.append(made["item"]["id"])
    transcript = (await client.post("/v1/transcripts", headers=shop.bot, json={
        "transcript": CALL, "user_id": "fuzz-customer"})).json()
    document = (await client.post("/v1/documents", headers=shop.owner, files={
        "file": ("faq.md", b"# Opening hours\n\nWe open at nine.", "text/markdown")})).json()
    example = (await client.post("/v1/out-of-scope", headers=shop.owner, json={
        "question": "Do you sell car insurance?", "redirect": "We only sell coffee gear."})).json()
    keys = (await client.get("/v1/keys", headers=shop.owner)).json()
    return {
        "shops": [shop.slug, str(shop.shop_id)],
        "entries": [e["entry_id"] for e in entries],
        "items": items,
        "turns": [turn["turn_id"]],
        "conversations": ["fuzz-conversation"],
        "users": ["fuzz-customer"],
        "transcripts": [transcript["id"]],
        "documents": [document["document"]["id"]],
        "examples": [example["id"]],
        "keys": [k["id"] for k in keys],
        "kinds": ["qa", "preferences", "label-studio"],
    }


# Which generated parameter each list of real identifiers stands in for.
_BINDINGS = {
    "query.shop": "shops", "path.shop_ref": "shops", "path.entry_id": "entries",
    "path.item_id": "items", "body.into": "items", "body.turn_id": "turns",
    "path.conversation_id": "conversations", "path.user_id": "users",
    "path.transcript_id": "transcripts", "path.document_id": "documents",
    "query.document_id": "documents", "path.example_id": "examples", "path.key_id": "keys",
    "path.kind": "kinds",
}


def _config(seeded: dict[str, list[Any]], path: Path, *, exclude: tuple[str, ...] = ()) -> Path:
    """A schemathesis.toml: the key from the environment, real identifiers drawn half of the
    time, and the operations left out."""
    lines = ['headers = { Authorization = "Bearer ${LEARNKB_FUZZ_KEY}" }', "",
             "[generation]", f"max-examples = {MAX_EXAMPLES}", "",
             "[phases.stateful]", f"max-steps = {STATEFUL_STEPS}",
             f'generation = {{ mode = "positive", max-examples = {STATEFUL_SCENARIOS} }}', ""]
    for name, values in seeded.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}'
              for key, name in _BINDINGS.items()]
    for operation in exclude:
        lines += ["", "[[operations]]", f'include-name = "{operation}"', "enabled = false"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _schemathesis(client: httpx.AsyncClient, key: str, config: Path,
                        report: Path) -> tuple[int, str]:
    """Run the schemathesis CLI against the served app (in this event loop, which keeps
    serving while the subprocess runs); its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"{client.base_url}/schema/openapi.json",
        "--checks", ",".join(CHECKS), "--seed", str(SEED), "--generation-database", "none",
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing,stateful",
        # A shared two-core machine is sometimes slow; that is not the API's fault.
        "--suppress-health-check", "too_slow",
        "--request-timeout", "60", "--no-color",
        "--report", "junit", "--report-junit-path", str(report),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=report.parent,
        env={**os.environ, "LEARNKB_FUZZ_KEY": key, "NO_COLOR": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    assert proc.returncode is not None
    output = out.decode(errors="replace")
    report.with_suffix(".txt").write_text(output)
    return proc.returncode, output


def _failures(output: str) -> str:
    """The part of the CLI's output a reader needs: failures with their curl lines, summary."""
    start = output.find("=== FAILURES ===")
    if start < 0:
        start = output.find("=== ERRORS ===")
    return output[start if start >= 0 else -6000:][-12000:]


def _check_run(status: int, output: str, operations: int) -> None:
    assert status == 0, _failures(output)
    assert re.search(rf"Selected: +{operations}/50\s+Tested: +{operations}\b", output), (
        output[-3000:])
    # Passing because every request was a 401 would prove nothing.
    assert "Authentication failed" not in output, output[-3000:]
    links = re.search(r"API Links: +(\d+) covered", output)
    assert links and int(links.group(1)) > 0, output[-3000:]


def _secret(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_every_operation_as_an_admin(client: httpx.AsyncClient, admin: dict[str, str],
                                           runtime: Runtime, tmp_path: Path) -> None:
    shop = await make_shop(runtime, "fuzz-admin")
    seeded = await _seed(client, shop)
    # Left out for the admin only: the stateful phase lists keys (GET /v1/keys) and revokes
    # what it found, this run's own admin key among them, after which every request is a 401.
    # The owner's run below covers revoking (an owner may revoke its shop's bot keys only).
    config = _config(seeded, tmp_path / "schemathesis.toml",
                     exclude=("DELETE /v1/keys/{key_id}",))
    started = time.perf_counter()
    status, output = await _schemathesis(client, _secret(admin), config, tmp_path / "junit.xml")
    _check_run(status, output, 49)
    assert (await client.get("/v1/shops", headers=admin)).status_code == 200
    print(f"admin run: {time.perf_counter() - started:.1f} s")


async def test_every_operation_as_a_shops_owner(client: httpx.AsyncClient, runtime: Runtime,
                                                tmp_path: Path) -> None:
    shop = await make_shop(runtime, "fuzz-owner")
    seeded = await _seed(client, shop)
    config = _config(seeded, tmp_path / "schemathesis.toml")
    started = time.perf_counter()
    status, output = await _schemathesis(client, _secret(shop.owner), config,
                                         tmp_path / "junit.xml")
    _check_run(status, output, 50)
    assert (await client.get("/v1/shops", headers=shop.owner)).status_code == 200
    print(f"owner run: {time.perf_counter() - started:.1f} s")


async def test_every_api_error_is_documented_as_problem_details(
        client: httpx.AsyncClient) -> None:
    """What the runs above rely on: each /v1 operation declares its problem responses with
    the problem-details schema, not Litestar's default 400 of another shape."""
    document = (await client.get("/schema/openapi.json")).json()
    assert "Problem" in document["components"]["schemas"]
    for route, operations in document["paths"].items():
        if not route.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "404", "422", "503"):
                content = responses[status]["content"]
                assert list(content) == ["application/problem+json"], (method, route, status)
            if method in {"post", "patch", "delete"}:
                assert {"409", "413", "415"} <= set(responses), (method, route)
