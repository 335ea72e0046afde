"""LLM2's System 2: a token verifier that scores each token of a sequence given its prefix.

``TokenVerifier`` is a causal-LM backbone (the base model of an ``AutoModelForCausalLM``, no LM
head) plus a scalar head ``Linear(hidden, 1, bias=False)`` read at every position. The score of
token ``x_p`` given ``x_<p`` is the head applied to the hidden state at position ``p``, where
``x_p`` is the *input* token: causal attention makes that hidden state a function of ``x_<=p``.

A saved verifier directory is an ordinary HF model directory of the backbone (or a PEFT adapter
directory when the backbone is LoRA-wrapped) plus ``verifier_head.safetensors`` and
``verifier_config.json``.

:func:`score_token_pairs` scores (ground truth, negative) token pairs for the pairwise loss with
one forward pass per batch: every negative token is appended after its sequence and attends, via
a custom 4D mask, only to its prefix and itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from raysys.data.io import atomic_write_bytes, atomic_write_json
from raysys.errors import ModelError
from raysys.models.loading import (
    ADAPTER_CONFIG, adapter_base, as_torch_dtype, check_remote_code, is_adapter_dir,
    resolve_model_path,
)

HEAD_FILE = "verifier_head.safetensors"
CONFIG_FILE = "verifier_config.json"
HEAD_INIT_STD = 1e-3  # small, so an untrained head starts near "no preference" yet not all-zero

# A sample list per sequence: (position, gt_token_id, neg_token_id).
Samples = Sequence[Sequence[Sequence[int]]]


class TokenVerifier(nn.Module):
    """Causal-LM backbone + a scalar head at every position; ``forward`` returns ``[B, T]``."""

    def __init__(self, backbone: nn.Module, hidden_size: int, *, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1, bias=False)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = torch.randn(self.head.weight.shape, generator=generator) * HEAD_INIT_STD
            self.head.weight.copy_(weight)
        self.head.to(dtype=self.backbone_dtype)

    @property
    def backbone_dtype(self) -> torch.dtype:
        """The floating dtype of the backbone's parameters (masks must match it)."""
        for p in self.backbone.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    @property
    def config(self):  # noqa: ANN201 - a transformers PretrainedConfig
        """The backbone's HF config (hidden size, vocab, ...), as trainers expect on a model."""
        return self.backbone.config

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | str = torch.float32,
                        trust_remote_code: bool = False, seed: int = 0,
                        attn_implementation: str | None = None) -> TokenVerifier:
        """Load a verifier from a saved verifier dir, or start one from a causal-LM dir.

        A plain HF causal-LM directory gives its base model and a fresh head (seeded, std
        ``HEAD_INIT_STD``); ``attn_implementation`` ("sdpa", "eager", ...) is passed to
        transformers, which otherwise picks its default. A directory written by
        :meth:`save_pretrained` also restores the head; if it holds a PEFT adapter, the adapter
        is loaded on top of its recorded base model.
        Weights are read from safetensors only. Raises :class:`ModelError` when ``path`` (or an
        adapter's base) is not a usable model directory, or asks for custom code that
        ``trust_remote_code`` does not allow.
        """
        from transformers import AutoModel

        try:
            root = Path(resolve_model_path(path))
        except ModelError as e:
            raise ModelError(f"verifier: {e}") from None
        # Weights only from safetensors (resolve_model_path refuses pickle-only dirs too).
        load_kwargs = {"dtype": as_torch_dtype(dtype), "trust_remote_code": trust_remote_code,
                       "use_safetensors": True}
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        if is_adapter_dir(root):
            from peft import PeftModel

            base_dir = Path(resolve_model_path(adapter_base(root)))
            check_remote_code(base_dir, trust_remote_code)
            base = AutoModel.from_pretrained(base_dir, **load_kwargs)
            backbone: nn.Module = PeftModel.from_pretrained(base, str(root), is_trainable=True)
            hidden = base.config.hidden_size
        else:
            check_remote_code(root, trust_remote_code)
            backbone = AutoModel.from_pretrained(root, **load_kwargs)
            hidden = backbone.config.hidden_size
        model = cls(backbone, hidden, seed=seed)
        head_path = root / HEAD_FILE
        if head_path.exists():
            state = load_file(str(head_path))
            if "weight" not in state or state["weight"].shape != model.head.weight.shape:
                raise ModelError(f"verifier: {head_path} does not hold a [1, {hidden}] 'weight'")
            with torch.no_grad():
                model.head.weight.copy_(state["weight"].to(model.head.weight.dtype))
        return model

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write the backbone (HF dir, or PEFT adapter dir), the head and a small config.

        The head file is written after the backbone and the config last, so a directory with
        ``verifier_config.json`` is complete.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # Overwriting an older verifier: it stops counting as complete until this one is.
        (out / CONFIG_FILE).unlink(missing_ok=True)
        self.backbone.save_pretrained(str(out))
        head = {"weight": self.head.weight.detach().to("cpu").contiguous()}
        atomic_write_bytes(out / HEAD_FILE, safetensors_bytes(head))
        atomic_write_json(out / CONFIG_FILE, {
            "kind": "token_verifier",
            "hidden_size": int(self.head.in_features),
            "head_file": HEAD_FILE,
            "peft_adapter": (out / ADAPTER_CONFIG).exists(),
            "score": "head(hidden[p]) scores input token x_p given x_<p",
        })
        return out

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        """Scores ``[B, T]`` (float32): ``out[b, p]`` scores token ``input_ids[b, p]`` given its prefix.

        ``attention_mask`` may be the usual 2D padding mask or a 4D additive float mask
        ``[B, 1, T, T]`` (as :func:`score_token_pairs` builds); with a 4D mask pass
        ``position_ids`` too.
        """
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.head(hidden).squeeze(-1).float()


# ------------------------------------------------------------------------------------------
# Packed pair scoring
# ------------------------------------------------------------------------------------------


def _samples_tensor(samples: Tensor | Samples, batch: int) -> tuple[Tensor, Tensor]:
    """Normalise ``samples`` to a ``[B, S, 3]`` long tensor and a ``[B, S]`` bool mask.

    Accepts per-sequence lists of ``(position, gt, neg)`` or a padded tensor whose padding rows
    have a negative position (as ``TokenPairCollator`` writes).
    """
    if isinstance(samples, Tensor):
        if samples.dim() != 3 or samples.shape[0] != batch or samples.shape[2] != 3:
            raise ValueError(f"score_token_pairs: samples tensor must be [B={batch}, S, 3], "
                             f"got {tuple(samples.shape)}")
        tensor = samples.long()
        return tensor, tensor[..., 0] >= 0
    if len(samples) != batch:
        raise ValueError(f"score_token_pairs: {len(samples)} sample lists for {batch} sequences")
    width = max((len(s) for s in samples), default=0)
    tensor = torch.full((batch, width, 3), -1, dtype=torch.long)
    for b, seq_samples in enumerate(samples):
        for j, triple in enumerate(seq_samples):
            if len(triple) != 3:
                raise ValueError(f"score_token_pairs: sequence {b} sample {j}: expected "
                                 f"(position, gt_id, neg_id), got {list(triple)}")
            tensor[b, j] = torch.tensor([int(v) for v in triple])
    return tensor, tensor[..., 0] >= 0


def _validate_samples(input_ids: Tensor, attention_mask: Tensor, samples: Tensor,
                      mask: Tensor) -> None:
    """Each sample's position is a real token of its sequence and holds its gt token id."""
    seq_len = input_ids.shape[1]
    positions = samples[..., 0]
    safe = positions.clamp(min=0, max=seq_len - 1)
    in_range = (positions < seq_len) & attention_mask.bool().gather(1, safe)
    matches = input_ids.gather(1, safe) == samples[..., 1]
    bad = mask & ~(in_range & matches)
    if not bad.any():
        return
    b, j = bad.nonzero()[0].tolist()
    pos, gt, _ = samples[b, j].tolist()
    if not bool(in_range[b, j]):
        raise ValueError(f"score_token_pairs: sequence {b} sample {j}: position {pos} is not a "
                         f"real token (sequence has {int(attention_mask[b].sum())} tokens)")
    raise ValueError(f"score_token_pairs: sequence {b} sample {j}: token at position {pos} is "
                     f"{int(input_ids[b, pos])}, but the sample's gt_id is {gt}")


def build_packed_inputs(input_ids: Tensor, attention_mask: Tensor, samples: Tensor,
                        sample_mask: Tensor, dtype: torch.dtype = torch.float32
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Append each sequence's negative tokens and build position ids and a 4D additive mask.

    Returns ``(packed_ids [B, T+S], position_ids [B, T+S], mask [B, 1, T+S, T+S])``. Rows for the
    original tokens are causal over real tokens; the row of the negative appended at slot
    ``T + j`` for position ``p`` sees exactly the real tokens at indices ``< p`` and itself, and
    takes the position id of the token it replaces. Padding rows see only themselves, which keeps
    every softmax row non-empty (an all-masked row would be NaN with some kernels).
    """
    batch, seq_len = input_ids.shape
    width = samples.shape[1]
    total = seq_len + width
    device = input_ids.device
    real = attention_mask.bool()
    # Position ids count real tokens, so left- and right-padded batches both work.
    seq_pos = (real.long().cumsum(-1) - 1).clamp(min=0)
    positions = samples[..., 0].clamp(min=0)
    neg_ids = torch.where(sample_mask, samples[..., 2], torch.zeros_like(samples[..., 2]))
    packed_ids = torch.cat([input_ids, neg_ids.to(input_ids.dtype)], dim=1)
    neg_pos = seq_pos.gather(1, positions)
    position_ids = torch.cat([seq_pos, neg_pos], dim=1)

    allowed = torch.zeros(batch, total, total, dtype=torch.bool, device=device)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    allowed[:, :seq_len, :seq_len] = causal & real[:, None, :] & real[:, :, None]
    key_index = torch.arange(seq_len, device=device)
    prefix = (key_index[None, None, :] < positions[:, :, None]) & real[:, None, :]
    allowed[:, seq_len:, :seq_len] = prefix & sample_mask[:, :, None]
    diag = torch.arange(total, device=device)
    allowed[:, diag, diag] = True  # every token sees itself (negatives, and pads need a key)

    additive = torch.zeros(batch, 1, total, total, dtype=dtype, device=device)
    additive.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return packed_ids, position_ids, additive


def score_token_pairs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                      samples: Tensor | Samples, sample_mask: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Score every (gt, neg) sample of a batch in ONE forward pass of ``model``.

    ``model`` is a :class:`TokenVerifier` or a wrapper whose forward has the same signature
    (DeepSpeed engine, DDP). ``samples`` is per-sequence lists of ``(position, gt_id, neg_id)``
    or a padded ``[B, S, 3]`` tensor (padding rows have position -1, or pass ``sample_mask``).
    ``s_gt`` is the score at ``position`` of the real sequence; ``s_neg`` is the score ``neg_id``
    would get in its place, with the same prefix. Returns flattened ``(s_gt [B*S], s_neg [B*S], mask [B*S])``; entries
    where ``mask`` is False are padding. Raises ``ValueError`` when a sample's position is not a
    real token or the token there is not its ``gt_id``.
    """
    batch, seq_len = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tensor, mask = _samples_tensor(samples, batch)
    tensor, mask = tensor.to(input_ids.device), mask.to(input_ids.device)
    if sample_mask is not None:
        mask = mask & sample_mask.to(input_ids.device).bool()
    _validate_samples(input_ids, attention_mask, tensor, mask)
    # From the parameters, not model.backbone_dtype: ``model`` may be a DeepSpeed/DDP wrapper.
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    packed_ids, position_ids, mask4d = build_packed_inputs(
        input_ids, attention_mask, tensor, mask, dtype=dtype)
    scores = model(packed_ids, attention_mask=mask4d, position_ids=position_ids)
    positions = tensor[..., 0].clamp(min=0)
    s_gt = scores[:, :seq_len].gather(1, positions)
    s_neg = scores[:, seq_len:]
    return s_gt.reshape(-1), s_neg.reshape(-1), mask.reshape(-1)
