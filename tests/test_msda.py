"""multi_scale_deform_attn: oracle on every backend, gradcheck, opcheck, grid_sample, bad inputs, compile."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deformconv
from deformconv.bench_msda import grid_sample_attention
from helpers import TOLERANCE, assert_close_to_scale, backend_params
from msda_oracle import msda_oracle

OP = "multi_scale_deform_attn"
BACKENDS = backend_params(OP)


@dataclass(frozen=True)
class Case:
    """One call: level sizes, batch N, queries Lq, heads M, channels D, points P."""

    shapes: tuple[tuple[int, int], ...]
    batch: int = 2
    queries: int = 5
    heads: int = 2
    channels: int = 3
    points: int = 2
    spread: float = 1.4  # locations uniform in [-0.2, 1.2] for 1.4: some fall outside

    def tensors(self, dtype=torch.float64, seed=0):
        g = torch.Generator().manual_seed(seed)
        levels = len(self.shapes)
        num_value = sum(h * w for h, w in self.shapes)
        starts = [0]
        for h, w in self.shapes[:-1]:
            starts.append(starts[-1] + h * w)
        value = torch.randn(self.batch, num_value, self.heads, self.channels, generator=g, dtype=torch.float64)
        size = (self.batch, self.queries, self.heads, levels, self.points)
        locations = torch.rand(*size, 2, generator=g, dtype=torch.float64) * self.spread - (self.spread - 1) / 2
        weights = torch.rand(*size, generator=g, dtype=torch.float64)
        return (
            value.to(dtype),
            torch.tensor(self.shapes, dtype=torch.int64),
            torch.tensor(starts, dtype=torch.int64),
            locations.to(dtype),
            weights.to(dtype),
        )


CASES = {
    "two-levels": Case(((5, 7), (3, 4))),
    "one-level": Case(((4, 6),), points=3),
    "one-point-odd-channels": Case(((3, 5), (2, 3), (1, 1)), points=1, channels=5, heads=3),
    "wide-spread": Case(((6, 2), (1, 4)), spread=3.0, queries=4),
    "one-pixel-levels": Case(((1, 1), (1, 2)), batch=1, queries=3),
    # Wider than one channel chunk of the C++ forward (64).
    "wide-channels": Case(((3, 4), (2, 2)), batch=1, queries=3, heads=2, channels=70, points=2),
}


def run(args, backend: str):
    with deformconv.use_backend(backend):
        return deformconv.multi_scale_deform_attn(*args)


def oracle_with_grads(args, grad_output):
    value, shapes, _, locations, weights = args
    leaves = [t.detach().to(torch.float64).requires_grad_() for t in (value, locations, weights)]
    out = msda_oracle(leaves[0], [tuple(s) for s in shapes.tolist()], leaves[1], leaves[2])
    grads = torch.autograd.grad(out, leaves, grad_output.to(torch.float64), allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def op_with_grads(args, grad_output, backend: str):
    value, shapes, starts, locations, weights = args
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    with deformconv.use_backend(backend):
        out = deformconv.multi_scale_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
        grads = torch.autograd.grad(out, leaves, grad_output)
    return out, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_matches_oracle(backend, name, dtype):
    case = CASES[name]
    args = case.tensors(dtype)
    grad_output = torch.randn(case.batch, case.queries, case.heads * case.channels, dtype=torch.float64)
    # Half types round their inputs: the oracle sees the rounded inputs.
    want, want_grads = oracle_with_grads(args, grad_output.to(dtype))
    got, got_grads = op_with_grads(args, grad_output.to(dtype), backend)
    assert got.dtype == dtype
    tolerance = TOLERANCE[dtype]
    assert_close_to_scale(got, want, tolerance, "output")
    for label, g, w in zip(("value", "sampling_locations", "attention_weights"), got_grads, want_grads):
        assert g.dtype == dtype
        # Location gradients are multiplied by the level size: compare to their own scale.
        assert_close_to_scale(g, w, tolerance, f"grad {label}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    value, shapes, starts, locations, weights = Case(((3, 4), (2, 3)), queries=3).tensors()
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())

    def fn(v, loc, w):
        with deformconv.use_backend(backend):
            return deformconv.multi_scale_deform_attn(v, shapes, starts, loc, w)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_grid_sample(backend):
    case = Case(((9, 13), (5, 7), (3, 4)), batch=2, queries=17, heads=4, channels=8, points=3)
    args = case.tensors(torch.float32, seed=3)
    value, shapes, _, locations, weights = args
    want = grid_sample_attention(value, [tuple(s) for s in shapes.tolist()], locations, weights)
    assert_close_to_scale(run(args, backend), want, TOLERANCE[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_locations_read_zero(backend):
    value, shapes, starts, locations, weights = Case(((4, 5), (2, 2)), queries=4).tensors()
    locations[0, 0] = float("nan")
    locations[0, 1, :, :, :, 0] = float("inf")
    locations[1, 2, :, :, :, 1] = -float("inf")
    out, grads = op_with_grads(
        (value, shapes, starts, locations, weights), torch.ones(2, 4, 6, dtype=value.dtype), backend
    )
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert (out[0, :2] == 0).all() and (out[1, 2] == 0).all()
    assert (grads[1][0, :2] == 0).all() and (grads[2][0, :2] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_budget_chunks_and_empty_and_strided(backend):
    case = Case(((5, 7), (3, 4)), batch=3, queries=6)
    args = case.tensors()
    grad_output = torch.randn(3, 6, 6, dtype=torch.float64)
    want, want_grads = op_with_grads(args, grad_output, backend)
    with deformconv.im2col_budget(1):  # one query of one image at a time
        got, got_grads = op_with_grads(args, grad_output, backend)
    assert torch.equal(got, want) and all(torch.equal(g, w) for g, w in zip(got_grads, want_grads))

    value, shapes, starts, locations, weights = args
    strided = (
        value.transpose(2, 3).contiguous().transpose(2, 3),
        shapes,
        starts,
        locations.flip(1).contiguous().flip(1)[:, ::2],
        weights.flip(1).contiguous().flip(1)[:, ::2],
    )
    assert not strided[0].is_contiguous() or not strided[3].is_contiguous()
    assert_close_to_scale(run(strided, backend), want[:, ::2], TOLERANCE[torch.float64])

    empty_batch = (value[:0], shapes, starts, locations[:0], weights[:0])
    no_queries = (value, shapes, starts, locations[:, :0], weights[:, :0])
    for empty in (empty_batch, no_queries):
        out, grads = op_with_grads(
            empty, torch.zeros(empty[0].shape[0], empty[3].shape[1], 6, dtype=torch.float64), backend
        )
        assert out.shape == (empty[0].shape[0], empty[3].shape[1], 6)
        assert [g.shape for g in grads] == [empty[0].shape, empty[3].shape, empty[4].shape]
        assert (grads[0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_is_deterministic(backend):
    case = Case(((8, 9), (4, 5)), batch=2, queries=40, heads=2, channels=4, points=4, spread=0.3)
    args = case.tensors(torch.float32)
    grad_output = torch.randn(2, 40, 8)
    first = op_with_grads(args, grad_output, backend)[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = op_with_grads(args, grad_output, backend)[1]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(first, single))


def test_opcheck():
    args = Case(((3, 4), (2, 3)), queries=3).tensors(torch.float32)
    leaves = [args[0].requires_grad_(), *args[1:3], args[3].requires_grad_(), args[4].requires_grad_()]
    torch.library.opcheck(torch.ops.deformconv.multi_scale_deform_attn.default, tuple(leaves))
    grad_output = torch.randn(2, 3, 6)
    backward_args = (grad_output, *(t.detach() for t in leaves), True, False, True)
    torch.library.opcheck(torch.ops.deformconv.multi_scale_deform_attn_backward.default, backward_args)


def test_gradients_not_asked_for_are_fresh_empty_tensors():
    args = Case(((3, 4),), queries=2).tensors()
    grads = torch.ops.deformconv.multi_scale_deform_attn_backward(
        torch.ones(2, 2, 6, dtype=torch.float64), *args, False, True, False
    )
    assert grads[0].numel() == 0 and grads[2].numel() == 0 and grads[1].shape == args[3].shape


def test_compile_fullgraph_forward_and_backward():
    args = Case(((5, 7), (3, 4)), queries=4).tensors(torch.float32)
    value, shapes, starts, locations, weights = args

    def loss(v, loc, w):
        return deformconv.multi_scale_deform_attn(v, shapes, starts, loc, w).square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    want = torch.autograd.grad(loss(*leaves), leaves)
    got = torch.autograd.grad(compiled(*leaves), leaves)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_autocast_runs_in_bfloat16():
    value, shapes, starts, locations, weights = Case(((5, 7), (3, 4)), queries=4).tensors(torch.float32)
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deformconv.multi_scale_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
    assert out.dtype == torch.bfloat16
    want = deformconv.multi_scale_deform_attn(*(t.to(torch.bfloat16) for t in (value,)), shapes, starts,
                                              locations.bfloat16(), weights.bfloat16())  # fmt: skip
    assert torch.equal(out, want)
    grads = torch.autograd.grad(out.float().sum(), leaves)
    assert all(g.dtype == torch.float32 for g in grads)


def _good():
    return list(Case(((3, 4), (2, 3)), queries=2).tensors(torch.float32))


def _with(index, tensor):
    args = _good()
    args[index] = tensor(args) if callable(tensor) else tensor
    return args


BAD = [
    (_with(0, lambda a: a[0][0]), ValueError, r"value must be a 4-d Tensor\[N, S, M, D\], got shape \(18, 2, 3\)"),
    (_with(0, lambda a: a[0].int()), TypeError, "value must be float64, float32, float16 or bfloat16, got torch.int32"),
    (
        _with(3, lambda a: a[3].double()),
        TypeError,
        r"sampling_locations must have the dtype of value \(torch.float32\), got torch.float64",
    ),
    (_with(4, lambda a: a[4].half()), TypeError, r"attention_weights must have the dtype of value"),
    (_with(1, lambda a: a[1].int()), TypeError, "spatial_shapes must be int64, got torch.int32"),
    (_with(2, lambda a: a[2].float()), TypeError, "level_start_index must be int64, got torch.float32"),
    (_with(1, lambda a: a[1][:, :1]), ValueError, r"spatial_shapes must have shape \[L, 2\] with L >= 1, got \[2, 1\]"),
    (_with(2, lambda a: a[2][:1]), ValueError, r"level_start_index must have shape \[L\] = \[2\], got \[1\]"),
    (
        _with(3, lambda a: a[3][:, :, :1]),
        ValueError,
        r"sampling_locations must have shape \[N, Lq, M, L, P, 2\] = \[2, 2, 2, 2, 2, 2\], got \[2, 2, 1",
    ),
    (_with(3, lambda a: a[3][..., :1]), ValueError, r"sampling_locations must have shape"),
    (
        _with(4, lambda a: a[4][:1]),
        ValueError,
        r"attention_weights must have shape \[N, Lq, M, L, P\] = \[2, 2, 2, 2, 2\], got \[1, 2, 2, 2, 2\]",
    ),
    (
        _with(1, torch.tensor([[3, 4], [2, 2]])),
        ValueError,
        r"spatial_shapes must cover value's S = 18 \(sum of H\*W\), "
        r"got levels \[\[3, 4\], \[2, 2\]\] with sum 16",
    ),
    (_with(1, torch.tensor([[3, 6], [0, 3]])), ValueError, r"spatial_shapes must hold \(H, W\) pairs >= 1"),
    (
        _with(2, torch.tensor([0, 11])),
        ValueError,
        r"level_start_index must be \[0, 12\] for spatial_shapes "
        r"\[\[3, 4\], \[2, 3\]\], got \[0, 11\]",
    ),
    (_with(0, lambda a: a[0][:, :, :, :0]), ValueError, "value must have at least one head and one channel"),
    (_with(3, lambda a: a[3][:, :, :, :, :0]), ValueError, "sampling_locations must have P >= 1 points"),
    (
        _with(1, lambda a: a[1].to("meta")),
        RuntimeError,
        r"spatial_shapes must be on the device of value \(cpu\), got meta",
    ),
    (_with(0, "value"), TypeError, r"value must be a Tensor\[N, S, M, D\], got str"),
]


@pytest.mark.parametrize(("args", "error", "match"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        deformconv.multi_scale_deform_attn(*args)


def test_bad_grad_output():
    args = _good()
    with pytest.raises(ValueError, match=r"grad_output must have shape \[N, Lq, M\*D\] = \[2, 2, 6\], got \[2, 2, 5\]"):
        torch.ops.deformconv.multi_scale_deform_attn_backward(torch.ones(2, 2, 5), *args, True, True, True)
    with pytest.raises(TypeError, match="grad_output must be a Tensor of dtype torch.float32, got torch.float64"):
        torch.ops.deformconv.multi_scale_deform_attn_backward(torch.ones(2, 2, 6).double(), *args, True, True, True)


level = st.tuples(st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    shapes=st.lists(level, min_size=1, max_size=3).map(tuple),
    batch=st.integers(1, 2),
    queries=st.integers(1, 4),
    heads=st.integers(1, 3),
    channels=st.integers(1, 5),
    points=st.integers(1, 3),
    spread=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_hypothesis_every_backend_matches_oracle(shapes, batch, queries, heads, channels, points, spread):
    case = Case(shapes, batch, queries, heads, channels, points, spread)
    args = case.tensors()
    grad_output = torch.randn(batch, queries, heads * channels, dtype=torch.float64)
    want, want_grads = oracle_with_grads(args, grad_output)
    for param in BACKENDS:
        got, got_grads = op_with_grads(args, grad_output, param.values[0])
        assert_close_to_scale(got, want, TOLERANCE[torch.float64], "output")
        for g, w in zip(got_grads, want_grads):
            assert_close_to_scale(g, w, TOLERANCE[torch.float64], "grad")


def test_bench_op_msda_prints_a_row_per_implementation(capsys):
    from deformconv import cli

    argv = ["bench", "--op", "msda", "--msda-shapes", "decoder", "--msda-batch", "1", "--msda-levels", "1"]
    assert cli.main([*argv, "--warmup", "0", "--repeat", "1", "--no-memory"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| decoder[N=1,L=1] |")]
    assert [row.split("|")[2].strip() for row in rows] == ["grid_sample", *[p.values[0] for p in BACKENDS]]
