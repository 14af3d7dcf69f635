"""torch.compile through the custom op (docs/DESIGN.md §7), on every backend available here
(torch.library.opcheck of the op on every backend: test_backend_contract.py)."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import rspose_kernels as rk
from rspose_kernels.testing import heatmap_case, random_rows, simcc_case
from tests.reference.parity import DEVICES

OP = torch.ops.rspose_kernels.rank_sort_rows


def backends(device):
    return rk.available_backends(device)




def _spatial(backend):
    def step(h, t, w):
        out = rk.spatial_rs_loss(h, t, w, backend=backend)
        return out.loss, out.rank, out.sort
    return step


def _grads(fn, h, *rest):
    h = h.detach().clone().requires_grad_(True)
    out = fn(h, *rest)
    out[0].backward()
    return out, h.grad


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_equals_eager_every_backend(device):
    h, t, w = heatmap_case(3, 4, 9, 7, 1.0, seed=21, device=device)
    for name in backends(device):
        eager, g_eager = _grads(_spatial(name), h, t, w)
        torch._dynamo.reset()
        compiled = torch.compile(_spatial(name), fullgraph=True, backend="aot_eager")
        comp, g_comp = _grads(compiled, h, t, w)
        for a, b in zip(comp, eager):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
        torch.testing.assert_close(g_comp, g_eager, rtol=1e-6, atol=1e-7, msg=name)


def test_inductor_training_step_no_graph_break():
    # A real training step: a head, the loss, backward, all in one inductor graph.
    h, t, w = heatmap_case(2, 3, 8, 6, 1.0, seed=22)
    head = torch.nn.Conv2d(3, 3, 1)

    def step(x, t, w):
        out = rk.spatial_rs_loss(head(x), t, w, grad_mode="exact")
        return out.loss

    explain = torch._dynamo.explain(step)(h, t, w)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    loss_c = compiled(h, t, w)
    loss_c.backward()
    grad_c = head.weight.grad.clone()
    head.weight.grad = None
    loss_e = step(h, t, w)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_c, head.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", ["rank_sort_loss", "spatial_rs_loss", "simcc_rs_loss"])
def test_no_graph_break_public_functions(fn):
    if fn == "simcc_rs_loss":
        pred, target, w = simcc_case(2, 3, 20, 24, 2.0, seed=23)
        args = (pred, target, w)
    elif fn == "spatial_rs_loss":
        args = heatmap_case(2, 3, 8, 6, 1.0, seed=23)
    else:
        args = random_rows(5, 19, seed=23)
    f = getattr(rk, fn)
    explain = torch._dynamo.explain(lambda *a: f(*a).loss)(*args)
    assert explain.graph_break_count == 0, explain.break_reasons


def _frames_over_two_batch_sizes(compiled, eager, counter, seed, msg=None):
    """``compiled`` on heatmap batches of 2 and 5, each eager-equal in loss and gradient;
    the counter's frame count after each."""
    frames = []
    for b in (2, 5):
        h, t, w = heatmap_case(b, 3, 8, 6, 1.0, seed=seed)
        h.requires_grad_(True)
        loss = compiled(h, t, w)
        loss.backward()
        h2 = h.detach().clone().requires_grad_(True)
        want = eager(h2, t, w)
        want.backward()
        torch.testing.assert_close(loss, want, msg=msg)
        torch.testing.assert_close(h.grad, h2.grad, msg=msg)
        frames.append(counter.frame_count)
    return frames


def test_dynamic_batch_compiles_once():
    counter = CompileCounterWithBackend("aot_eager")

    def step(h, t, w):
        return rk.spatial_rs_loss(h, t, w).loss

    compiled = torch.compile(step, dynamic=True, fullgraph=True, backend=counter)
    frames = _frames_over_two_batch_sizes(compiled, step, counter, seed=24)
    # The second batch size reuses the first compilation; the one non-empty graph holds the
    # whole loss (dynamo may also record an empty frame for the constant backend lookup).
    assert frames[1] == frames[0]
    assert sum(1 for g in counter.graphs if len(g.graph.nodes) > 1) == 1


def test_value_checks_survive_compile():
    s, y = random_rows(3, 8, seed=25)
    compiled = torch.compile(lambda s, y: rk.rank_sort_loss(s, y).loss, fullgraph=True,
                             backend="aot_eager")
    with pytest.raises(RuntimeError, match=r"labels: expected values in \[0, 1\]"):
        compiled(s, y + 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_cuda_eager_and_compiled():
    h, t, w = heatmap_case(2, 17, 16, 12, 2.0, seed=26, device="cuda")
    h.requires_grad_(True)
    for name in [b for b in backends("cuda") if b != "torch"]:   # the reference may sync
        pose = rk.RSPoseLoss(backend=name)
        pose(h, t, w)   # first call outside the checked region too (constants, kernels)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            pose(h, t, w).backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        step = _spatial(name)
        compiled = torch.compile(step, fullgraph=True)
        compiled(h, t, w)   # compile outside the checked region
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step(h, t, w)[0].backward()
            compiled(h, t, w)[0].backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("algorithm", ["bucketed", "auto"])
def test_algorithm_is_a_compile_constant(algorithm):
    # The algorithm name is resolved in Python on constants: one graph, no break, no
    # recompile across batch sizes, eager-equal, on every backend that has a choice.
    for name in [b for b in backends("cpu") if len(rk.available_algorithms(b)) > 1]:
        def step(h, t, w):
            return rk.spatial_rs_loss(h, t, w, backend=name, algorithm=algorithm).loss

        h, t, w = heatmap_case(2, 3, 8, 6, 1.0, seed=27)
        explain = torch._dynamo.explain(step)(h, t, w)
        assert explain.graph_break_count == 0, explain.break_reasons
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(step, dynamic=True, fullgraph=True, backend=counter)
        frames = _frames_over_two_batch_sizes(compiled, step, counter, seed=28, msg=name)
        assert frames[1] == frames[0], name
