"""A learnkb of the evaluation's own: a fresh database, `learnkb serve`, real keys."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx


def learnkb_command() -> str:
    """The `learnkb` console script of the running interpreter's environment."""
    return str(Path(sys.executable).parent / "learnkb")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(env: dict[str, str], port: int, ready_seconds: float = 300, jobs: bool = False,
           options: Sequence[str] = (), output: IO[str] | None = None,
           ) -> Iterator[tuple[str, int]]:
    """`learnkb serve [options]` in its own process, as users run it (with its batch jobs, or
    without them for a caller that runs them itself), its output to `output` if given;
    stopped on exit."""
    command = [learnkb_command(), "serve", "--port", str(port), *options]
    if not jobs:
        command.append("--no-jobs")
    # The command is this environment's own learnkb script, never caller input.
    proc = subprocess.Popen(command, env=env, stdout=output,  # noqa: S603
                            stderr=subprocess.STDOUT if output else None)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            if proc.poll() is not None:
                raise RuntimeError("learnkb serve exited before it was ready")
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("learnkb serve did not become ready")
            time.sleep(0.25)
        yield base, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True, slots=True)
class Instance:
    base_url: str
    admin_key: str
    env: dict[str, str]

    def run(self, *args: str) -> str:
        """A `learnkb` command against this instance's database; its standard output."""
        done = subprocess.run([learnkb_command(), *args], env=self.env,  # noqa: S603
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"learnkb {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout


@contextmanager
def start_instance(data_dir: str | None = None, database_url: str | None = None,
                   model_cache: Path | None = None, jobs: bool = False,
                   settings: dict[str, str] | None = None,
                   log: Path | None = None) -> Iterator[Instance]:
    """A fresh instance: an embedded database in a new data directory (removed afterwards)
    unless `database_url` names one, which must then be empty. `settings` are LEARNKB_*
    variables for it; `jobs` runs the batch jobs inside `learnkb serve`, as by default.
    With `log`, everything the server says (at level info) goes to that file instead of the
    terminal; without it, only its warnings reach the terminal."""
    owned = data_dir is None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="learnkb-eval-"))
    env = dict(os.environ)
    env.update(LEARNKB_DATA_DIR=str(root),
               LEARNKB_LOG_LEVEL="info" if log is not None else "warning")
    if model_cache is not None:
        env["LEARNKB_MODEL_CACHE"] = str(model_cache)
    env.update(settings or {})
    if database_url:
        env["LEARNKB_DATABASE_URL"] = database_url
    else:
        env.pop("LEARNKB_DATABASE_URL", None)
    try:
        created = Instance("", "", env).run("keys", "create", "--role", "admin",
                                            "--name", "eval")
        secret = str(json.loads(created)["secret"])
        port = free_port()
        with ExitStack() as stack:
            output = None
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                output = stack.enter_context(log.open("w", encoding="utf-8"))
            with served(env, port, jobs=jobs, output=output) as (base, _):
                yield Instance(base, secret, env)
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
