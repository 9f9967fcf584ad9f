"""The model's forward pass straight through onnxruntime: tokenizer, graph, mean pooling.

sentence-transformers' ONNX backend runs the same graph but wraps every call in torch tensors,
an optimum model class and its pooling and normalization modules; for the short texts learnkb
embeds that wrapping cost about a third of the time of a batch. This runs the exported graph
with numpy only. It is used only after its vectors are checked against sentence-transformers'
own on probe texts (see Embedder), so it is the same model, not an approximation of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


class OnnxEncoder:
    """Mean-pooled, normalized sentence vectors from an exported BERT-style ONNX graph."""

    def __init__(self, model_dir: Path, graph_file: str, max_tokens: int,
                 session_options: Any) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.session = onnxruntime.InferenceSession(
            str(model_dir / graph_file), session_options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # As sentence-transformers does: cut at the model's sequence limit, pad to the longest
        # text of the batch (the file's own settings pad everything to a fixed length).
        tokenizer.enable_truncation(max_tokens)
        pad = tokenizer.padding or {}
        tokenizer.enable_padding(pad_id=int(pad.get("pad_id", 0)),
                                 pad_token=str(pad.get("pad_token", "[PAD]")))
        self.tokenizer = tokenizer

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        tokens = self.session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return vectors
