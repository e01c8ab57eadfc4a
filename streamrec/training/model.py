"""The SASRec-family sequence encoder (torch).

A causal self-attention encoder over item vectors (Kang & McAuley 2018) with the changes that
later work found to pay: pre-LayerNorm blocks, GELU feed-forward, and training with a full
softmax over the catalogue (Klenitskiy & Vasilev 2023) instead of one sampled negative.

The encoder reads *vectors*, not ids (see :mod:`streamrec.ranking.modelfiles`):
``history`` [B, T, dim] left-padded with zero vectors and ``mask`` [B, T]. Positions are learned
and counted from the most recent item backwards (0 = latest), which for left-padded windows
equals SASRec's absolute positions while letting T vary freely up to ``max_len``. Item vectors are
the rows of the shared input/output embedding table; the encoder scales its input by sqrt(dim)
itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Large but finite, so a query with no visible key (a padded slot) gives a uniform softmax
# instead of NaN; those slots are zeroed by the mask anyway.
_NEG = -1e9


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of the encoder.

    Attributes:
        num_items: catalogue size (rows of the item table, padding excluded).
        dim: vector dimension.
        max_len: longest history the encoder reads.
        blocks: number of transformer blocks.
        heads: attention heads per block.
        dropout: dropout rate on embeddings, attention and feed-forward.
    """

    num_items: int
    dim: int = 64
    max_len: int = 200
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.3


class _Block(nn.Module):
    """Pre-LayerNorm causal self-attention block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_scale = 1.0 / math.sqrt(dim // heads)  # a Python float: a graph constant
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * dim, dim),
        )
        self.attn_drop = nn.Dropout(dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; bias: [B, 1, T, T] additive attention bias (0 or _NEG)."""
        b, t = x.shape[0], x.shape[1]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        # [B, T, D] -> [B, H, T, D/H]; traced b and t keep both axes dynamic in the ONNX graph.
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * self.head_scale + bias
        attn = self.attn_drop(torch.softmax(scores, dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.drop(self.proj(out))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    """Causal self-attention sequence encoder with a shared item table.

    Row 0 of ``item_emb`` is padding (always zero); item ``i`` (1-based) is row ``i``.
    ``sparse``: the item table gets sparse gradients (only the rows a step touched), for large
    catalogs trained with a sampled softmax (``torch.optim.SparseAdam`` updates them).
    """

    def __init__(self, config: ModelConfig, sparse: bool = False) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.item_emb = nn.Embedding(config.num_items + 1, dim, padding_idx=0, sparse=sparse)
        self.pos_emb = nn.Embedding(config.max_len, dim)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(dim, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.scale = math.sqrt(dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, param in self.named_parameters():
            if param.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def item_vectors(self) -> torch.Tensor:
        """The catalogue's vectors [num_items, dim] (padding row excluded)."""
        return self.item_emb.weight[1:]

    def rows(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors of 0-based item rows (through the embedding: sparse gradients if sparse)."""
        return self.item_emb(items + 1)

    def encode(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states at every position.

        Args:
            history: [B, T, dim] item vectors, left-padded with zeros.
            mask: [B, T] 1.0 for real items, 0.0 for padding.

        Returns:
            [B, T, dim]; position t only sees positions <= t.
        """
        # Distance of each real item from the latest one (0 = latest); padding gets 0 and is
        # masked out. Built from tensor ops only, so T stays dynamic in the ONNX graph.
        after = mask.sum(dim=1, keepdim=True) - mask.cumsum(dim=1)
        positions = (after * mask).long().clamp(max=self.config.max_len - 1)
        keep = mask.unsqueeze(-1)
        x = history * self.scale + self.pos_emb(positions)
        x = self.emb_drop(x) * keep
        ones = torch.ones_like(mask[0]).unsqueeze(0)  # [1, T]
        causal = torch.tril(ones.transpose(0, 1) @ ones)  # [T, T] lower-triangular
        visible = causal.unsqueeze(0) * mask.unsqueeze(1)  # [B, T, T]
        bias = ((1.0 - visible) * _NEG).unsqueeze(1)
        for block in self.blocks:
            x = block(x, bias) * keep
        return self.final_norm(x) * keep

    def embed_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ids [B, T] (0 = padding) -> (history vectors, mask) as serving passes them."""
        return self.item_emb(ids), (ids > 0).to(torch.float32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, dim] for left-padded id sequences [B, T]."""
        history, mask = self.embed_ids(ids)
        return self.encode(history, mask)


class UserEncoder(nn.Module):
    """The exported graph: (history, mask) -> user vector at the latest position."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, dim], [B, T] -> [B, dim]."""
        return self.model.encode(history, mask)[:, -1, :]
