"""The README's run command: `learnkb serve --demo` on an empty machine answers end to end,
and its embedded database keeps its data across a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

LEARNKB = str(Path(sys.executable).parent / "learnkb")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _serve(data_dir: Path, port: int) -> Iterator[httpx.Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNKB_")}
    env["LEARNKB_DATA_DIR"] = str(data_dir)
    log = (data_dir.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen([LEARNKB, "serve", "--demo", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, (data_dir.parent / f"serve-{port}.log").read_text()
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not become ready"
                time.sleep(0.25)
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_serve_demo_answers_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
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
