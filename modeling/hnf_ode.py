"""HNF's sequence branch: an attention + MLP vector field and the bidirectional neural ODE built on it.

Speed (the fields are evaluated 2 x 4 times per layer with rk4, so this is most of HNF's cost):

- both time directions are evaluated in one call: their weights are stacked once per solve and every projection
  is one batched matmul (`baddbmm`) over `(2, B * T, d)`, the attention one SDPA call over `2 B` sequences;
- the fixed-step solvers (euler, midpoint, rk4) run here, with torchdiffeq's update formulas, so that their last
  stage evaluates the field for the positions that are read alone (the CLS token, by default): keys and values
  still come from every token, queries, attention output and MLP from the kept ones;
- adaptive solvers and the adjoint method still go through torchdiffeq.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from transformers.activations import ACT2FN

from .configuration_hnf import ODE_FIXED_STEP_METHODS

# torchdiffeq's fixed-grid step formulas, reproduced by `HNFBidirectionalODE._fixed_step_solve`
OWN_FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")


class HNFSelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence, through `scaled_dot_product_attention`."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, tokens: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """`keep`: the positions whose outputs are wanted (queries); every position still gives keys and values."""
        batch, length, width = tokens.shape
        heads, head_dim = self.num_heads, width // self.num_heads
        if keep is None:
            # (3, B, heads, T, head_dim)
            qkv = self.qkv(tokens).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            query, key, value = qkv
        else:
            qkv = self.qkv(tokens).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            query, key, value = qkv[0][:, :, keep], qkv[1], qkv[2]
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, query.shape[2], width))


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

    def forward(self, t: torch.Tensor, tokens: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """f(t, tokens) `(B, T, d)`, or only at the positions `keep` `(B, T_kept, d)`."""
        tokens = tokens + t * self.time_embedding
        attended = self.attention(self.attention_norm(tokens), keep)
        kept = tokens if keep is None else tokens[:, keep]
        return attended + self.mlp(self.mlp_norm(kept + attended))


class HNFStackedFields:
    """The forward-time and the backward-time field as one batched function of the stacked state `(2, B, T, d)`.

    Built from the two `HNFODEVectorField`s at the start of a solve (their weights stacked on a leading axis of 2,
    the backward field's time vector and output negated), so that gradients flow back to both fields' parameters.
    Computes what `HNFBidirectionalDynamics.forward` computes (up to rounding: LayerNorm's affine step is applied
    after a non-affine normalisation, and the matmuls are batched).
    """

    def __init__(self, forward_field: HNFODEVectorField, backward_field: HNFODEVectorField):
        fields = (forward_field, backward_field)

        def stack(get, transpose=False):
            stacked = torch.stack([get(field) for field in fields])
            return stacked.transpose(1, 2) if transpose else stacked

        self.time = torch.stack([forward_field.time_embedding, -backward_field.time_embedding])[:, None, None, :]
        self.attention_norm = (stack(lambda f: f.attention_norm.weight)[:, None, None], stack(lambda f: f.attention_norm.bias)[:, None, None])
        self.mlp_norm = (stack(lambda f: f.mlp_norm.weight)[:, None, None], stack(lambda f: f.mlp_norm.bias)[:, None, None])
        self.eps = (forward_field.attention_norm.eps, forward_field.mlp_norm.eps)
        self.qkv = (stack(lambda f: f.attention.qkv.weight, True), stack(lambda f: f.attention.qkv.bias)[:, None])
        self.out_proj = (stack(lambda f: f.attention.out_proj.weight, True), stack(lambda f: f.attention.out_proj.bias)[:, None])
        self.fc1 = (stack(lambda f: f.mlp.fc1.weight, True), stack(lambda f: f.mlp.fc1.bias)[:, None])
        self.fc2 = (stack(lambda f: f.mlp.fc2.weight, True), stack(lambda f: f.mlp.fc2.bias)[:, None])
        self.activation = forward_field.mlp.act
        self.num_heads = forward_field.attention.num_heads
        self.training = forward_field.training
        self.attention_dropout = forward_field.attention.dropout if self.training else 0.0
        self.hidden_dropout = forward_field.mlp.dropout.p if self.training else 0.0
        self.sign = torch.tensor([1.0, -1.0], dtype=self.time.dtype, device=self.time.device)[:, None, None, None]

    @staticmethod
    def supports(forward_field: HNFODEVectorField, backward_field: HNFODEVectorField) -> bool:
        """Plain modules only (a LoRA or other wrapper around a projection keeps the per-field path)."""
        for field in (forward_field, backward_field):
            linears = (field.attention.qkv, field.attention.out_proj, field.mlp.fc1, field.mlp.fc2)
            norms = (field.attention_norm, field.mlp_norm)
            if any(type(module) is not nn.Linear for module in linears) or any(type(norm) is not nn.LayerNorm for norm in norms):
                return False
        return True

    @staticmethod
    def _linear(hidden: torch.Tensor, weight_bias: tuple, rows: slice | None = None) -> torch.Tensor:
        weight, bias = weight_bias
        if rows is not None:
            weight, bias = weight[..., rows], bias[..., rows]
        return torch.baddbmm(bias, hidden, weight)

    def _norm(self, hidden: torch.Tensor, weight_bias: tuple, eps: float) -> torch.Tensor:
        weight, bias = weight_bias
        return torch.addcmul(bias, F.layer_norm(hidden, hidden.shape[-1:], eps=eps), weight)

    def __call__(self, s: torch.Tensor, state: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """d/ds of the stacked state `(2, B, T, d)` -> `(2, B, T, d)` (or `(2, B, T_kept, d)` with `keep`)."""
        _, batch, length, width = state.shape
        heads, head_dim = self.num_heads, width // self.num_heads
        tokens = state + s * self.time
        normed = self._norm(tokens, self.attention_norm, self.eps[0]).view(2, batch * length, width)
        if keep is None:
            qkv = self._linear(normed, self.qkv).view(2 * batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            query, key, value = qkv
            kept = tokens
        else:
            kept = tokens[:, :, keep]
            query = normed.view(2, batch, length, width)[:, :, keep].reshape(2, -1, width)
            query = self._linear(query, self.qkv, slice(0, width)).view(2 * batch, -1, heads, head_dim).transpose(1, 2)
            key, value = self._linear(normed, self.qkv, slice(width, None)).view(2 * batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        kept_length = query.shape[2]
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=self.attention_dropout)
        attended = self._linear(attended.transpose(1, 2).reshape(2, batch * kept_length, width), self.out_proj)
        attended = attended.view(2, batch, kept_length, width)
        hidden = self._norm(kept + attended, self.mlp_norm, self.eps[1]).view(2, batch * kept_length, width)
        hidden = self._linear(self.activation(self._linear(hidden, self.fc1)), self.fc2)
        hidden = F.dropout(hidden, self.hidden_dropout, self.training).view(2, batch, kept_length, width)
        return (attended + hidden) * self.sign


class HNFBidirectionalDynamics(nn.Module):
    """Both directions as one system on s in [0, T]: d/ds [h_fwd, h_bwd] = [f_fwd(s, h_fwd), -f_bwd(-s, h_bwd)].

    `h_bwd(s)` equals the solution of dh/dt = f_bwd(t, h) at t = -s, so one solver call integrates the
    forward-time field from 0 to T and the backward-time field from 0 to -T. The state stacks both
    directions on a leading axis of size 2 (a plain tensor keeps the solver free of tuple packing).
    `forward` evaluates the two fields one after the other (torchdiffeq's adjoint needs module calls);
    `stacked()` gives the batched evaluation the solvers use otherwise.
    """

    def __init__(self, config):
        super().__init__()
        self.forward_field = HNFODEVectorField(config)
        self.backward_field = HNFODEVectorField(config)
        self.num_evaluations = 0

    def forward(self, s: torch.Tensor, state: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        self.num_evaluations += 1
        return torch.stack([self.forward_field(s, state[0], keep), -self.backward_field(-s, state[1], keep)])

    def stacked(self):
        """A function `(s, state, keep=None) -> d state / ds` evaluating both fields in one batched call (the
        per-field `forward` when a projection is wrapped, e.g. by LoRA). Counts evaluations like `forward`."""
        if not HNFStackedFields.supports(self.forward_field, self.backward_field):
            return self
        fields = HNFStackedFields(self.forward_field, self.backward_field)

        def evaluate(s, state, keep=None):
            self.num_evaluations += 1
            return fields(s, state, keep)

        return evaluate


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

    def solve(self, tokens: torch.Tensor, keep: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The end states of both directions `(B, T, d)` each; with `keep`, only those positions (the last solver
        stage then evaluates the fields for them alone; adaptive solvers and the adjoint compute all and slice)."""
        start = torch.stack([tokens, tokens])
        if self.method in OWN_FIXED_STEP_METHODS and not self.adjoint:
            end_state = self._fixed_step_solve(self.dynamics.stacked(), start, keep)
        else:
            times = torch.tensor([0.0, self.integration_time], dtype=tokens.dtype, device=tokens.device)
            kwargs = {"method": self.method}
            if self.method in ODE_FIXED_STEP_METHODS:
                kwargs["options"] = {"step_size": self.integration_time / self.steps}
            else:
                kwargs.update(rtol=self.rtol, atol=self.atol)
            if self.adjoint:
                end_state = odeint_adjoint(self.dynamics, start, times, **kwargs)[-1]
            else:
                end_state = odeint(self.dynamics.stacked(), start, times, **kwargs)[-1]
            if keep is not None:
                end_state = end_state[:, :, keep]
        return end_state[0], end_state[1]

    def _fixed_step_solve(self, func, state: torch.Tensor, keep: slice | None) -> torch.Tensor:
        """torchdiffeq's fixed grid (`step_size = T / ode_steps`) and its euler / midpoint / rk4 (3/8-rule) steps;
        in the last step the final stage is evaluated at the kept positions only."""
        times = torch.linspace(0.0, self.integration_time, self.steps + 1, dtype=state.dtype, device=state.device)
        times[-1] = self.integration_time
        for index in range(self.steps):
            t0, t1 = times[index], times[index + 1]
            dt = t1 - t0
            last_keep = keep if index == self.steps - 1 else None

            def kept(tensor):
                return tensor if last_keep is None else tensor[:, :, last_keep]

            if self.method == "euler":
                state = kept(state) + dt * func(t0, state, last_keep)
            elif self.method == "midpoint":
                half_dt = 0.5 * dt
                f0 = func(t0, state)
                state = kept(state) + dt * func(t0 + half_dt, state + f0 * half_dt, last_keep)
            else:  # rk4: torchdiffeq's rk4_alt_step_func
                k1 = func(t0, state)
                k2 = func(t0 + dt / 3, state + dt * k1 / 3)
                k3 = func(t0 + dt * 2 / 3, state + dt * (k2 - k1 / 3))
                k4 = func(t1, state + dt * (k1 - k2 + k3), last_keep)
                state = kept(state) + (kept(k1) + 3 * (kept(k2) + kept(k3)) + k4) * dt * 0.125
        return state

    def merge(self, forward_end: torch.Tensor, backward_end: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.merge_gate(torch.cat([forward_end, backward_end], dim=-1)))
        return gate * forward_end + (1 - gate) * backward_end

    def forward(self, tokens: torch.Tensor, keep: int | slice = slice(None)) -> torch.Tensor:
        """Refined tokens (B, T, d); `keep` selects which positions to merge and return (e.g. -1: the CLS only)."""
        if isinstance(keep, int):  # one position, without its axis
            return self.forward(tokens, slice(keep, keep + 1 if keep != -1 else None))[:, 0]
        forward_end, backward_end = self.solve(tokens, None if keep == slice(None) else keep)
        return self.merge(forward_end, backward_end)
