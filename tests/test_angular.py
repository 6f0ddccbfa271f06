"""Angular distance between layer inputs: over all tokens (mean) or Gromov et al.'s last token only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from whatmatters.method.scores import compute_scores


def streams(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream entering each layer and leaving the last one, from the stock forward."""
    out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    # hidden_states[-1] is after the final norm; the last layer's raw output is what the scorer compares.
    raw = []
    handle = model.model.layers[-1].register_forward_hook(
        lambda m, a, o: raw.append(o[0] if isinstance(o, tuple) else o)
    )
    model(input_ids=ids, use_cache=False)
    handle.remove()
    return [*out.hidden_states[:-1], raw[0]]


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.arccos(F.cosine_similarity(a, b, dim=-1).clamp(-1, 1)) / math.pi


@torch.no_grad()
def test_last_token_angular_distance_uses_only_each_samples_last_token():
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(0))
    got = compute_scores(model, ids, angular_tokens="last_token", progress=False)
    mean = compute_scores(model, ids, progress=False)
    h = streams(model, ids)
    for i, j in [(0, 1), (1, 3), (0, 4)]:
        assert got.angular[i][j] == pytest.approx(angle(h[i][:, -1], h[j][:, -1]).mean().item(), abs=1e-5)
        assert mean.angular[i][j] == pytest.approx(angle(h[i], h[j]).mean().item(), abs=1e-5)
    assert got.meta["angular"] == "last_token" and mean.meta["angular"] == "mean"
    assert not torch.allclose(
        torch.tensor(got.angular), torch.tensor(mean.angular), atol=1e-4
    )  # the two definitions really differ
    assert got.block == mean.block  # the importance scores do not depend on the angular setting


@torch.no_grad()
def test_last_token_skips_right_padding():
    model = tiny_model("llama")
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # sample 0 ends at position 4
    got = compute_scores(model, ids, attention_mask=mask, angular_tokens="last_token", progress=False)
    alone = compute_scores(model, ids[:1, :5], angular_tokens="last_token", progress=False)
    other = compute_scores(model, ids[1:], angular_tokens="last_token", progress=False)
    want = (torch.tensor(alone.angular) + torch.tensor(other.angular)) / 2  # one last token per sample
    off = ~torch.eye(len(want), dtype=torch.bool)  # arccos(1 - eps) on the diagonal is rounding noise
    assert torch.allclose(torch.tensor(got.angular)[off], want[off], atol=1e-5)


def test_unknown_angular_tokens_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="last_token"):
        compute_scores(tiny_model("llama"), torch.zeros(1, 4, dtype=torch.long), angular_tokens="first")
