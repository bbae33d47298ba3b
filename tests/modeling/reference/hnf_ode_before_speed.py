# FROZEN COPY of the implementation before the speed work (issue 13), kept only as the numerical reference that
# tests/modeling/test_speed_equivalence.py compares the current code against. Do not edit; do not import elsewhere.
"""HNF's sequence branch: an attention + MLP vector field and the bidirectional neural ODE built on it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from transformers.activations import ACT2FN

from emvision.modeling.configuration_hnf import ODE_FIXED_STEP_METHODS


class HNFSelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence, through `scaled_dot_product_attention`."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        # (3, B, heads, T, head_dim)
        qkv = self.qkv(tokens).view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(*qkv, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class HNFFeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden))))


class HNFODEVectorField(nn.Module):
    """dh/dt = f(t, h): a pre-norm attention + MLP block without its residual, so patches interact.

    Time enters through a learned vector scaled by `t` and added to the input tokens.
    """

    def __init__(self, config):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = HNFSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HNFFeedForward(config)
        self.time_embedding = nn.Parameter(torch.zeros(config.hidden_size))

    def forward(self, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + t * self.time_embedding
        attended = self.attention(self.attention_norm(tokens))
        return attended + self.mlp(self.mlp_norm(tokens + attended))


class HNFBidirectionalDynamics(nn.Module):
    """Both directions as one system on s in [0, T]: d/ds [h_fwd, h_bwd] = [f_fwd(s, h_fwd), -f_bwd(-s, h_bwd)].

    `h_bwd(s)` equals the solution of dh/dt = f_bwd(t, h) at t = -s, so one solver call integrates the
    forward-time field from 0 to T and the backward-time field from 0 to -T. The state stacks both
    directions on a leading axis of size 2 (a plain tensor keeps the solver free of tuple packing).
    """

    def __init__(self, config):
        super().__init__()
        self.forward_field = HNFODEVectorField(config)
        self.backward_field = HNFODEVectorField(config)
        self.num_evaluations = 0

    def forward(self, s: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        self.num_evaluations += 1
        return torch.stack([self.forward_field(s, state[0]), -self.backward_field(-s, state[1])])


class HNFBidirectionalODE(nn.Module):
    """Refines tokens with a forward-time and a backward-time neural ODE from the same start state,
    then merges the two end states token by token with a learned sigmoid gate."""

    def __init__(self, config):
        super().__init__()
        self.dynamics = HNFBidirectionalDynamics(config)
        self.merge_gate = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.method = config.ode_method
        self.adjoint = config.ode_adjoint
        self.integration_time = float(config.ode_integration_time)
        self.steps = config.ode_steps
        self.rtol = config.ode_rtol
        self.atol = config.ode_atol

    def solve(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        times = torch.tensor([0.0, self.integration_time], dtype=tokens.dtype, device=tokens.device)
        kwargs = {"method": self.method}
        if self.method in ODE_FIXED_STEP_METHODS:
            kwargs["options"] = {"step_size": self.integration_time / self.steps}
        else:
            kwargs.update(rtol=self.rtol, atol=self.atol)
        solver = odeint_adjoint if self.adjoint else odeint
        end_state = solver(self.dynamics, torch.stack([tokens, tokens]), times, **kwargs)[-1]
        return end_state[0], end_state[1]

    def merge(self, forward_end: torch.Tensor, backward_end: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.merge_gate(torch.cat([forward_end, backward_end], dim=-1)))
        return gate * forward_end + (1 - gate) * backward_end

    def forward(self, tokens: torch.Tensor, keep: int | slice = slice(None)) -> torch.Tensor:
        """Refined tokens (B, T, d); `keep` selects which positions to merge and return (e.g. -1: the CLS only)."""
        forward_end, backward_end = self.solve(tokens)
        return self.merge(forward_end[:, keep], backward_end[:, keep])
