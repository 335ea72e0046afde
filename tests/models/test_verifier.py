"""TokenVerifier: loading, save/load round trips, score semantics, and packed pair scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from raysys.errors import ModelError
from raysys.models.verifier import CONFIG_FILE, HEAD_FILE, TokenVerifier, score_token_pairs
from raysys.training.collators import TokenPairCollator
from raysys.training.losses import pairwise_token_loss


def _verifier(model_dir: Path, attn: str | None = None) -> TokenVerifier:
    """A verifier with a non-trivial head: the default small init would make every check easy."""
    model = TokenVerifier.from_pretrained(model_dir, attn_implementation=attn).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape,
                                            generator=torch.Generator().manual_seed(7)))
    return model


def _score_last(model: TokenVerifier, ids: list[int]) -> float:
    """Score of the last token of an unpadded sequence, by a plain separate forward (CPU)."""
    with torch.no_grad():
        return float(model(torch.tensor([ids]))[0, -1])


def test_from_plain_causal_lm_dir_uses_its_base_weights(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    verifier = TokenVerifier.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base = lm.get_decoder().state_dict()
    mine = verifier.backbone.state_dict()
    assert set(mine) == set(base)
    assert all(torch.equal(mine[k], base[k]) for k in base)
    # Head: small, not all-zero, and reproducible for a seed.
    w = verifier.head.weight
    assert w.shape == (1, lm.config.hidden_size) and 0 < w.abs().max() < 0.01
    again = TokenVerifier.from_pretrained(tiny_model_dir)
    other = TokenVerifier.from_pretrained(tiny_model_dir, seed=1)
    assert torch.equal(again.head.weight, w) and not torch.equal(other.head.weight, w)


def test_missing_dir_is_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        TokenVerifier.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelError, match="config.json"):
        TokenVerifier.from_pretrained(tmp_path)


def test_refuses_pickle_weights_and_unallowed_remote_code(tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    pickle_only = shutil.copytree(tiny_model_dir, tmp_path / "bin_only")
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    with pytest.raises(ModelError, match=rf"^verifier: .*{pickle_only}: only pickle weights"):
        TokenVerifier.from_pretrained(pickle_only)
    custom = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "custom_llama.CustomLlama"}
    (custom / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=rf"{custom}: config.json has auto_map"):
        TokenVerifier.from_pretrained(custom)


def test_resave_over_an_old_verifier_replaces_its_head(tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    out = _verifier(tiny_model_dir).save_pretrained(tmp_path / "v")
    newer = TokenVerifier.from_pretrained(tiny_model_dir, seed=5)
    newer.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files
    loaded = TokenVerifier.from_pretrained(out)
    assert torch.equal(loaded.head.weight, newer.head.weight)


def test_score_at_p_depends_only_on_prefix_and_token(tiny_model_dir: Path) -> None:
    model = _verifier(tiny_model_dir)
    ids = [1, 40, 41, 42, 43, 44]
    with torch.no_grad():
        full = model(torch.tensor([ids]))[0]
        changed_suffix = model(torch.tensor([ids[:3] + [90, 91, 92]]))[0]
    assert full.shape == (6,)
    torch.testing.assert_close(full[:3], changed_suffix[:3], atol=1e-5, rtol=0)
    assert abs(full[2].item() - _score_last(model, ids[:3])) < 1e-5
    assert abs(float(full[3] - changed_suffix[3])) > 1e-4  # the token itself matters


def test_save_and_load_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _verifier(tiny_model_dir)
    out = model.save_pretrained(tmp_path / "verifier")
    assert (out / HEAD_FILE).exists() and (out / "config.json").exists()
    assert json.loads((out / CONFIG_FILE).read_text())["kind"] == "token_verifier"
    loaded = TokenVerifier.from_pretrained(out).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)


def test_peft_wrapped_backbone_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = _verifier(tiny_model_dir)
    model.backbone = get_peft_model(model.backbone, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the scores
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        expected = model(ids)
    out = model.save_pretrained(tmp_path / "lora_verifier")
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    loaded = TokenVerifier.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, atol=1e-5, rtol=0)
        plain = TokenVerifier.from_pretrained(tiny_model_dir).eval()
        plain.head.load_state_dict(model.head.state_dict())
        assert (plain(ids) - expected).abs().max() > 1e-3  # the adapter was really applied


def _batch(right_padded: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple]]]:
    """Two sequences of lengths 7 and 4 (padded to 7); several samples at one position, a sample
    at position 0 (empty prefix) and at each sequence's last real token."""
    seqs = [[1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52]]
    samples = [
        [(3, 42, 60), (3, 42, 61), (6, 45, 62), (1, 40, 63)],
        [(3, 52, 64), (0, 1, 65)],
    ]
    if right_padded:
        batch = TokenPairCollator(pad_id=0)([{"input_ids": s, "samples": [list(t) for t in ss]}
                                             for s, ss in zip(seqs, samples)])
        return batch["input_ids"], batch["attention_mask"], samples
    ids = torch.tensor([seqs[0], [0, 0, 0] + seqs[1]])
    mask = torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    shifted = [samples[0], [(p + 3, gt, neg) for p, gt, neg in samples[1]]]
    return ids, mask, shifted


def _check_packed_equals_separate(model: TokenVerifier, right_padded: bool, atol: float) -> None:
    device = next(model.parameters()).device

    @torch.no_grad()
    def last(tokens: list[int]) -> float:  # the score of the last token, by a separate forward
        return float(model(torch.tensor([tokens], device=device))[0, -1])

    ids, mask, samples = _batch(right_padded)
    with torch.no_grad():
        s_gt, s_neg, valid = score_token_pairs(model, ids.to(device), mask.to(device), samples)

    width = max(len(s) for s in samples)
    assert s_gt.shape == s_neg.shape == valid.shape == (2 * width,)
    assert valid.tolist() == [True] * 4 + [True, True, False, False]
    for b, seq_samples in enumerate(samples):
        real = [int(t) for t, m in zip(ids[b], mask[b]) if m]
        offset = int((mask[b] == 0).sum()) if not right_padded else 0
        for j, (pos, gt, neg) in enumerate(seq_samples):
            prefix = real[:pos - offset]
            k = b * width + j
            assert abs(s_gt[k].item() - last(prefix + [gt])) < atol
            assert abs(s_neg[k].item() - last(prefix + [neg])) < atol
    # Samples at the same position with different negatives get different scores.
    assert abs(s_neg[0].item() - s_neg[1].item()) > 1e-4


@pytest.mark.parametrize("attn,right_padded", [("sdpa", True), ("eager", True), ("sdpa", False)])
def test_packed_scores_equal_separate_forwards(tiny_model_dir: Path, attn: str,
                                               right_padded: bool) -> None:
    _check_packed_equals_separate(_verifier(tiny_model_dir, attn), right_padded, atol=1e-5)


@pytest.mark.gpu
def test_packed_scores_equal_separate_forwards_cuda(tiny_model_dir: Path) -> None:
    """CUDA SDPA kernels take a different path for custom masks than the CPU ones."""
    model = _verifier(tiny_model_dir, "sdpa").to("cuda")
    _check_packed_equals_separate(model, right_padded=True, atol=1e-3)


def test_packed_scoring_accepts_collated_tensor_and_trains(tiny_model_dir: Path) -> None:
    model = _verifier(tiny_model_dir)
    ids, mask, samples = _batch()
    batch = TokenPairCollator(pad_id=0)([{"input_ids": [int(t) for t, m in zip(r, mr) if m],
                                          "samples": [list(t) for t in s]}
                                         for r, mr, s in zip(ids, mask, samples)])
    with torch.no_grad():
        from_lists = score_token_pairs(model, ids, mask, samples)
    model.train()
    s_gt, s_neg, valid = score_token_pairs(model, batch["input_ids"], batch["attention_mask"],
                                           batch["samples"], batch["sample_mask"])
    torch.testing.assert_close(s_gt, from_lists[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(s_neg, from_lists[1], atol=1e-5, rtol=0)
    loss = pairwise_token_loss(s_gt, s_neg, valid)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert len(grads) == len(list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_sample_validation_errors(tiny_model_dir: Path) -> None:
    model = _verifier(tiny_model_dir)
    ids, mask, _ = _batch()
    with pytest.raises(ValueError, match="sequence 0 sample 1: token at position 2 is 41, "
                                         "but the sample's gt_id is 99"):
        score_token_pairs(model, ids, mask, [[(1, 40, 5), (2, 99, 5)], []])
    with pytest.raises(ValueError, match="sequence 1 sample 0: position 5 is not a real token"):
        score_token_pairs(model, ids, mask, [[], [(5, 0, 5)]])
