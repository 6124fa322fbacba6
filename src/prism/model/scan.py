"""Selective scan (the S6 recurrence of Mamba) in pure PyTorch, with a hand-written backward.

The function computed is exactly mamba_ssm's ``selective_scan_ref``::

    delta    = softplus(delta + delta_bias)            # if delta_softplus
    h_t      = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t      = <h_t, C_t> + D * u_t
    out      = y * silu(z)                             # if z is given

Autograd through the full ``(B, D, L, N)`` state costs gigabytes at L = 2000, so
:class:`SelectiveScanFn` keeps only one state per chunk of ``chunk_size`` steps.
Its backward walks the chunks in reverse, recomputes each chunk's states from the
saved boundary state, and runs the adjoint recurrence
``g_t = dy_t * C_t + exp(delta_{t+1} A) * g_{t+1}`` to get every gradient.
Within a chunk, everything except the recurrence itself is one vectorised op per chunk;
the recurrence is one in-place ``addcmul_`` per step on a contiguous ``(B, D, N)`` slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "selective_scan_reference", "SelectiveScanFn", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 64


def _chunk_states(h0: torch.Tensor, dA: torch.Tensor, dBu: torch.Tensor) -> torch.Tensor:
    """Run the recurrence over one chunk, in place in ``dBu``.

    h0: (B, D, N) state before the chunk; dA, dBu: (T, B, D, N) contiguous.
    Returns dBu overwritten with the states h_1..h_T, shape (T, B, D, N).
    """
    hs = dBu
    hs[0].addcmul_(dA[0], h0)
    for t in range(1, hs.shape[0]):
        hs[t].addcmul_(dA[t], hs[t - 1])
    return hs


class SelectiveScanFn(torch.autograd.Function):
    """Chunked selective scan; see the module docstring. Inputs are time-major (L, B, ...)."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, chunk_size):
        # u, delta, z: (L, B, D); Bm, Cm: (L, B, N); A: (D, N); D, delta_bias: (D,) or None
        L, batch, d_inner = u.shape
        n_state = A.shape[1]
        delta_raw = delta if delta_bias is None else delta + delta_bias  # (L, B, D)
        dt = F.softplus(delta_raw) if delta_softplus else delta_raw  # (L, B, D)
        du = dt * u  # (L, B, D)

        y = torch.empty_like(u)  # (L, B, D)
        n_chunks = (L + chunk_size - 1) // chunk_size
        h_start = u.new_empty(n_chunks, batch, d_inner, n_state)  # (n_chunks, B, D, N)
        h = u.new_zeros(batch, d_inner, n_state)  # (B, D, N)
        for c in range(n_chunks):
            s, e = c * chunk_size, min((c + 1) * chunk_size, L)
            h_start[c] = h
            dA = torch.exp(dt[s:e, :, :, None] * A)  # (T, B, D, N)
            dBu = du[s:e, :, :, None] * Bm[s:e, :, None, :]  # (T, B, D, N)
            hs = _chunk_states(h, dA, dBu)
            y[s:e] = (hs * Cm[s:e, :, None, :]).sum(dim=-1)  # (T, B, D); beats einsum's bmm at N = 16
            h = hs[-1].clone()
        if D is not None:
            y = y + u * D  # (L, B, D)
        if z is not None:
            out = y * F.silu(z)
        else:
            out = y
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        ctx.has_bias = delta_bias is not None
        ctx.save_for_backward(u, delta_raw, A, Bm, Cm, D, z, h_start, y if z is not None else None)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta_raw, A, Bm, Cm, D, z, h_start, y = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        L = u.shape[0]
        dout = dout.contiguous()
        if z is not None:
            sz = torch.sigmoid(z)
            dz = dout * y * sz * (1 + z * (1 - sz))  # d silu(z) = s (1 + z (1 - s))
            dy = dout * z * sz  # (L, B, D)
        else:
            dz = None
            dy = dout
        dt = F.softplus(delta_raw) if ctx.delta_softplus else delta_raw  # (L, B, D)
        du_prod = dt * u  # (L, B, D)

        d_u = torch.empty_like(u)
        d_dt = torch.empty_like(u)
        d_Bm = torch.empty_like(Bm)
        d_Cm = torch.empty_like(Cm)
        d_A = torch.zeros_like(A)
        carry = None  # exp(delta_{t+1} A) * g_{t+1} from the chunk after, (B, D, N)
        n_chunks = h_start.shape[0]
        for c in reversed(range(n_chunks)):
            s, e = c * chunk_size, min((c + 1) * chunk_size, L)
            h0 = h_start[c]  # (B, D, N)
            dA = torch.exp(dt[s:e, :, :, None] * A)  # (T, B, D, N)
            hs = _chunk_states(h0, dA, du_prod[s:e, :, :, None] * Bm[s:e, :, None, :])  # (T, B, D, N)
            dy_c = dy[s:e]  # (T, B, D)
            # sum over D as a row-vector matmul, (T, B, 1, D) @ (T, B, D, N): 10x faster than einsum on CPU
            d_Cm[s:e] = torch.matmul(dy_c[:, :, None, :], hs).squeeze(2)  # (T, B, N)
            # adjoint recurrence, in place: g_t = dy_t C_t + dA_{t+1} g_{t+1}
            g = dy_c[:, :, :, None] * Cm[s:e, :, None, :]  # (T, B, D, N)
            T = e - s
            if carry is not None:
                g[T - 1].add_(carry)
            for t in range(T - 2, -1, -1):
                g[t].addcmul_(dA[t + 1], g[t + 1])
            carry = dA[0] * g[0]
            # h_{t-1} for every step of the chunk, (T, B, D, N)
            h_prev = torch.cat([h0[None], hs[:-1]], dim=0)
            # gradient w.r.t. the exponent delta_t * A: g_t * h_{t-1} * dA_t
            g_exp = h_prev.mul_(dA).mul_(g)  # (T, B, D, N), reuses h_prev's storage
            gB = (g * Bm[s:e, :, None, :]).sum(dim=-1)  # sum_n g B, (T, B, D)
            d_dt[s:e] = (g_exp * A).sum(dim=-1) + gB * u[s:e]
            # d_A = sum_{t,b} g_exp * dt; an in-place scale then a leading-dim sum beats einsum here
            d_A += g_exp.mul_(dt[s:e, :, :, None]).sum(dim=(0, 1))
            d_u[s:e] = gB * dt[s:e]
            d_Bm[s:e] = torch.matmul(du_prod[s:e, :, None, :], g).squeeze(2)  # (T, B, N)

        if D is not None:
            d_u += dy * D
            d_D = (dy * u).sum(dim=(0, 1))
        else:
            d_D = None
        d_raw = d_dt * torch.sigmoid(delta_raw) if ctx.delta_softplus else d_dt  # (L, B, D)
        d_bias = d_raw.sum(dim=(0, 1)) if ctx.has_bias else None
        return d_u, d_raw, d_A, d_Bm, d_Cm, d_D, dz, d_bias, None, None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Selective scan with mamba_ssm's ``selective_scan_fn`` signature (real inputs, variable B and C).

    u, delta: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,); z: (B, D, L) or None.
    Returns (B, D, L) in u's dtype. Half-precision inputs are computed in float32, as mamba_ssm does.
    """
    out_dtype = u.dtype
    work = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype

    def tm(x):  # (B, C, L) -> (L, B, C), contiguous, in the working dtype
        return x.to(work).permute(2, 0, 1).contiguous()

    out = SelectiveScanFn.apply(
        tm(u),
        tm(delta),
        A.to(work),
        tm(B),
        tm(C),
        None if D is None else D.to(work),
        None if z is None else tm(z),
        None if delta_bias is None else delta_bias.to(work),
        delta_softplus,
        chunk_size,
    )  # (L, B, D)
    return out.permute(1, 2, 0).to(out_dtype)  # (B, D, L)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Plain step-by-step autograd loop (slow, memory-hungry); same arguments as :func:`selective_scan`."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, L = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1])  # (B, D, N)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A)  # (B, D, N)
        dBu = (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]  # (B, D, N)
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y
