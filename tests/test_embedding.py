"""The embedder: normalized 384-d vectors, batching across callers, a cache, ONNX == torch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from knowledge.model.embedding import Embedder, bundled_model_path
from knowledge.runtime import Runtime


async def test_vectors_are_normalized_and_384_dimensional(runtime: Runtime) -> None:
    vector = await runtime.embedder.embed("Where is my parcel?")
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


async def test_concurrent_requests_share_forward_passes(runtime: Runtime) -> None:
    stats = runtime.embedder.stats
    before_batches, before_texts = stats.batches, stats.batched_texts
    texts = [f"is order number {i} on its way?" for i in range(24)]
    vectors = await asyncio.gather(*(runtime.embedder.embed(t) for t in texts))
    assert len(vectors) == 24
    batches = stats.batches - before_batches
    assert stats.batched_texts - before_texts == 24
    assert batches < 24 / 2, batches  # gathered, not one forward pass each
    alone = runtime.embedder.encode_sync([texts[5]])[0]
    assert float(np.dot(alone, vectors[5])) > 0.9999


async def test_a_lone_question_skips_the_queue_and_the_next_one_still_batches(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = runtime.embedder
    assert embedder._queue is not None
    queued = 0
    put = embedder._queue.put

    async def counting_put(item: object) -> None:
        nonlocal queued
        queued += 1
        await put(item)  # type: ignore[arg-type]

    monkeypatch.setattr(embedder._queue, "put", counting_put)
    vector = await embedder.embed("Can I change my delivery address after ordering?")
    assert queued == 0, "a question to an idle model went through the batcher"
    alone = embedder.encode_sync(["can i change my delivery address after ordering?"])[0]
    assert float(np.dot(alone, vector)) > 0.9999
    # Questions arriving while the model runs wait for it together.
    texts = [f"can parcel {i} go to a locker?" for i in range(12)]
    await asyncio.gather(*(embedder.embed(t) for t in texts))
    assert queued >= 10


async def test_repeated_questions_come_from_the_cache(runtime: Runtime) -> None:
    stats = runtime.embedder.stats
    first = await runtime.embedder.embed("Do you deliver on Sundays?")
    hits = stats.cache_hits
    again = await runtime.embedder.embed("  do you deliver on   SUNDAYS? ")
    assert stats.cache_hits == hits + 1
    assert again is first


def test_onnx_backend_gives_the_vectors_torch_gives(runtime: Runtime) -> None:
    assert runtime.embedder.backend == "onnx"
    torch = Embedder(runtime.settings.with_overrides(embedding_backend="torch"))
    torch.load()
    assert torch.backend == "torch"
    # One batch of unequal lengths (padding), and a text past the model's 256-token limit.
    texts = ["Can I return opened beans?", "BX-220 burr set", "Versand nach Österreich",
             "ok", "my grinder arrived with a cracked hopper and the burrs rattle " * 40]
    assert runtime.embedder.direct
    a = np.stack(torch.encode_sync(texts))
    b = np.stack(runtime.embedder.encode_sync(texts))
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    assert bundled_model_path().exists()
