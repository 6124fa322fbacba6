"""The chunked selective scan against a plain float64 loop written here, and gradcheck."""

import sys

import pytest
import torch
import torch.nn.functional as F

from prism.model.scan import selective_scan


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's selective_scan_ref math, one time step at a time."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B, D, N)
    ys = []
    for t in range(u.shape[2]):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def make_inputs(batch, d, n, length, seed=0, delta_scale=1.0, with_z=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(
        u=r(batch, d, length),
        delta=r(batch, d, length) * delta_scale,
        A=-torch.rand(d, n, generator=g, dtype=dtype) * 4 - 0.1,
        B=r(batch, n, length),
        C=r(batch, n, length),
        D=r(d),
        z=r(batch, d, length) if with_z else None,
        delta_bias=r(d) * 0.5,
    )


def assert_rel_close(actual, expected, rel=1e-6):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max() / scale
    assert err <= rel, f"relative error {err:.3e} > {rel:.0e}"


def check_against_loop(inputs, delta_softplus=True, chunk_size=16):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if v is not None}
    full = {k: leaves.get(k) for k in inputs}
    ours = selective_scan(**full, delta_softplus=delta_softplus, chunk_size=chunk_size)
    ref = loop_scan(**full, delta_softplus=delta_softplus)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert_rel_close(ours, ref)
    grad_out = torch.randn_like(ref)
    names = list(leaves)
    g_ours = torch.autograd.grad(ours, [leaves[k] for k in names], grad_out)
    g_ref = torch.autograd.grad(ref, [leaves[k] for k in names], grad_out)
    for name, a, b in zip(names, g_ours, g_ref):
        assert a.shape == b.shape, name
        assert_rel_close(a, b), name


@pytest.mark.parametrize("with_z", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 200])
def test_matches_loop(with_z, chunk_size):
    check_against_loop(make_inputs(2, 5, 4, 45, with_z=with_z), chunk_size=chunk_size)


def test_large_steps_without_softplus():
    # delta in [0, 5]: exp(delta * A) underflows towards 0 for the strongest channels
    inputs = make_inputs(2, 4, 6, 60, seed=1)
    inputs["delta"] = torch.rand(2, 4, 60, dtype=torch.float64) * 5
    inputs["delta_bias"] = None
    check_against_loop(inputs, delta_softplus=False)


def test_large_steps_with_softplus():
    check_against_loop(make_inputs(2, 4, 6, 60, seed=2, delta_scale=5.0))


def test_long_sequence():
    check_against_loop(make_inputs(1, 2, 3, 2000, seed=3), chunk_size=64)


def test_no_D_no_bias():
    inputs = make_inputs(2, 3, 4, 30, seed=4)
    inputs["D"] = None
    inputs["delta_bias"] = None
    check_against_loop(inputs, delta_softplus=False, chunk_size=8)


@pytest.mark.parametrize("with_z", [True, False])
def test_gradcheck(with_z):
    inputs = make_inputs(2, 3, 2, 11, seed=5, with_z=with_z)
    names = [k for k, v in inputs.items() if v is not None]
    leaves = [inputs[k].clone().requires_grad_() for k in names]

    def fn(*args):
        return selective_scan(**dict(zip(names, args)), delta_softplus=True, chunk_size=4)

    assert torch.autograd.gradcheck(fn, leaves)


def test_half_precision_runs_in_float32():
    inputs = make_inputs(1, 4, 3, 20, seed=6, dtype=torch.float32)
    ref = selective_scan(**inputs, delta_softplus=True)
    half = selective_scan(**{k: v.bfloat16() for k, v in inputs.items()}, delta_softplus=True)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), ref, rtol=0.05, atol=0.05)


def test_mamba_kernels_not_imported_eagerly():
    import prism.model  # noqa: F401

    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules
