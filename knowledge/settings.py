"""Settings read once from LEARNKB_* environment variables and passed around explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from knowledge.errors import Invalid

_PREFIX = "LEARNKB_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable; defaults are what a fresh machine runs with."""

    database_url: str | None = None
    data_dir: Path = Path(".learnkb")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    pool_min_size: int = 2
    pool_max_size: int = 10
    # Bounds on waiting for the database: a connection, and one statement.
    db_connect_timeout_seconds: float = 5.0
    db_command_timeout_seconds: float = 15.0

    # Embedding: "onnx" is about twice as fast as "torch" here with identical vectors.
    embedding_backend: str = "onnx"
    embedding_model_path: Path | None = None
    # Where the exported ONNX model is kept (default: under data_dir); several data
    # directories, such as evaluation instances, can share one.
    model_cache: Path | None = None
    embed_batch_max: int = 32
    embed_batch_wait_ms: float = 2.0
    embed_cache_size: int = 4096
    # Batches encoded at once, each by its own copy of the model, and the threads each uses
    # (0: the runtime's default, every core).
    embed_workers: int = 2
    embed_threads: int = 1

    # Retrieval.
    search_candidates: int = 10
    rrf_k: int = 60
    exact_search_max_vectors: int = 2_000
    hnsw_min_shop_fraction: float = 0.05
    hnsw_ef_search: int = 100
    # A bigger graph needs a wider search to stay as exact: past this many vectors in the table
    # the answer search walks it with hnsw_ef_search_large (benchmarks/million.py: at 1,000,000
    # vectors recall@10 was 0.978 at 100 and at 400, 0.988 at 600).
    hnsw_large_table_vectors: int = 500_000
    hnsw_ef_search_large: int = 600
    fts_common_lexeme_frequency: float = 0.02
    fallback_min_similarity: float = 0.3

    # How long a process trusts a key whose slow hash it verified before verifying it again;
    # a revocation applies at once regardless (key_revocations.py).
    auth_cache_seconds: float = 300.0

    # Extra PII patterns to redact, as JSON: {"iban": "\\bDE\\d{20}\\b"}.
    redact_extra_patterns: str = ""
    # How often the apply job moves approved learning into the knowledge base.
    apply_interval_seconds: int = 20
    # Batches the apply job writes side by side: most of a batch is PostgreSQL inserting its
    # vectors into the graph, on one core; two use both of a small machine's.
    apply_workers: int = 2
    # How often shops whose knowledge changed get their out-of-scope decision refitted.
    calibrate_interval_seconds: int = 60
    # The p95 answer time the answer_time alert holds each shop to.
    answer_p95_budget_ms: float = 100.0
    # Prometheus at GET /metrics (no key); a port other than 0 serves it there instead.
    metrics_enabled: bool = True
    metrics_port: int = 0
    # How often raw text past a shop's retention is cleared.
    retention_interval_seconds: int = 3_600
    # How often logged turns get their question vectors (and low-confidence ones a gap).
    embed_turns_interval_seconds: int = 5
    # How often calls whose pairs were not all queued (a crash part-way) are finished.
    transcript_pairs_interval_seconds: int = 60

    # Review pages (/admin): a signed-in session lasts at most this long, and ends sooner
    # when idle; its cookie is marked Secure when served over TLS or when this is true.
    session_hours: float = 8.0
    session_idle_minutes: float = 60.0
    secure_cookies: bool = False

    # Overload: requests per second each key may make (a burst of twice as many passes; a shop
    # may set its own), and questions that may wait for the model before more are shed (503).
    rate_limit_per_second: float = 500.0
    embed_queue_max: int = 64
    # Requests in progress at once (probes and static files aside); more are refused with 503
    # at once, before any work.
    max_in_flight: int = 48

    # Limits on what callers may send.
    max_question_chars: int = 2_000
    max_answer_chars: int = 20_000
    max_request_bytes: int = 1_048_576
    max_document_bytes: int = 10_485_760

    # Batch jobs inside `learnkb serve`; a separate `learnkb worker` can run them instead.
    run_jobs: bool = True
    metrics_refresh_seconds: int = 3_600

    demo: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read LEARNKB_<FIELD> variables; a malformed value is an error, never ignored."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **overrides)

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir.resolve() / "pgdata"

    @property
    def model_cache_dir(self) -> Path:
        if self.model_cache is not None:
            return self.model_cache.resolve()
        return self.data_dir.resolve() / "models"


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if "bool" in type_name:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if "Path" in type_name:
            return Path(raw)
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise Invalid(f"environment variable {_PREFIX}{name.upper()}={raw!r} is not a valid "
                      f"{type_name}") from exc
    return raw
