"""The README's run command: `learnkb serve --demo` on an empty machine answers end to end,
and its embedded database keeps its data across a restart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from evaluation.instance import free_port, served


@contextmanager
def _serve(data_dir: Path, port: int) -> Iterator[httpx.Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    env["LEARNKB_DATA_DIR"] = str(data_dir)
    log_path = data_dir.parent / f"serve-{port}.log"
    with log_path.open("w") as log:
        try:
            with served(env, port, ready_seconds=180, jobs=True, options=["--demo"],
                        output=log) as (base, _), \
                    httpx.Client(base_url=base, timeout=30) as client:
                yield client
        except RuntimeError as exc:
            raise AssertionError(f"{exc}: {log_path.read_text()}") from exc


def test_serve_demo_answers_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with _serve(data_dir, port) as client:
        key = (data_dir / "demo-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        r = client.post("/v1/answer", headers=headers,
                        json={"question": "how long does delivery take?"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tier"] == "answer", body
        assert "2 to 4" in body["answer"]
        assert body["sources"][0]["source"] == "document"
        code = client.get("/v1/search", headers=headers, params={"q": "BX-220 burrs"}).json()
        assert code["results"][0]["question"].startswith("How do I replace the burrs")
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "learnkb"
        assert client.get("/health").json()["status"] == "ok"
        # The owner key the demo writes signs in to the review pages.
        owner = (data_dir / "demo-owner-key").read_text().strip()
        form = client.get("/admin/sign-in")
        token = form.text.split('name="_csrf" value="')[1].split('"')[0]
        signed = client.post("/admin/sign-in", data={"_csrf": token, "key": owner})
        assert signed.status_code == 303 and signed.headers["location"] == "/admin/queue"
        assert "Brew &amp; Co." in client.get("/admin/queue").text
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    # learnkb stopped the embedded server it started.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    with _serve(data_dir, port) as client:
        # The same key still works: the shop, its knowledge and its keys survived the restart.
        assert (data_dir / "demo-key").read_text().strip() == key
        again = client.post("/v1/answer", headers=headers,
                            json={"question": "how long does delivery take?"}).json()
        assert again["sources"][0]["entry_id"] == body["sources"][0]["entry_id"]
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
