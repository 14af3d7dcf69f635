"""docs/DESIGN.md §10: Instance-Sort over the global batch and the global mean, on gloo (CPU).

Each distributed test spawns W processes (torch.multiprocessing, file:// rendezvous in a
temporary directory, gloo on the loopback device: nothing leaves the machine) that train a
small float64 model one step under DistributedDataParallel on uneven slices of one global
batch, and compare it with the same model in one process on the concatenated batch. Every
rank computes that reference itself, so no result needs to travel back: a failed assert in a
child fails the test.
"""
import copy
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import rspose_kernels as rk
from rspose_kernels import distributed
from rspose_kernels.testing import gaussian_targets, simcc_case

K, C, H, W = 5, 2, 9, 7      # odd sizes; K != 17, so the default sigmas
# float64 everywhere: the distributed and the single-process losses sum the same terms in a
# different order (per-rank partial sums, padded rows, DDP's sum / W), a few ulps each;
# measured: at most 7e-15 relative, 9e-16 absolute. 1e-12 / 1e-13 leaves ~100× room and no
# more: the local (unsynchronised) gradient misses by far more (asserted below).
TOL = dict(rtol=1e-12, atol=1e-13)


class TinyPoseNet(nn.Module):
    """A conv head: heatmaps [B, K, H, W], or SimCC logits (x [B, K, W], y [B, K, H])."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(C, K, 3, padding=1, dtype=torch.float64)

    def forward(self, x):
        h = self.conv(x)
        return h if self.mode == "heatmap" else (h.mean(-2), h.mean(-1))


def global_batch(n, seed, blank):
    """Images, heatmap targets, SimCC targets and weights of n instances; instances in
    ``blank`` have no visible keypoint (their weights are all 0)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    targets, weights = gaussian_targets(n, K, H, W, 1.0, seed=seed, invisible=0.3)
    _, simcc_targets, _ = simcc_case(n, K, W, H, 1.5, seed=seed + 1)
    weights[list(blank)] = 0
    return images, targets.double(), tuple(t.double() for t in simcc_targets), weights.double()


def _slices(sizes):
    start = 0
    for b in sizes:
        yield slice(start, start + b)
        start += b


def _pick(data, part):
    return tuple(_pick(d, part) for d in data) if isinstance(data, tuple) else data[part]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _worker(rank, world, init_file, sizes, blank, checks):
    if os.path.exists("/sys/class/net/lo"):   # gloo on the loopback device only
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # A mismatched collective fails in 2 minutes, not gloo's default 30 (CI has 90 in all).
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        torch.manual_seed(0)
        images, targets, simcc_targets, weights = global_batch(sum(sizes), 11, blank)
        mine = list(_slices(sizes))[rank]
        for mode, tgt in (("heatmap", targets), ("simcc", simcc_targets)):
            model = TinyPoseNet(mode)
            ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(model))
            # One process, the concatenated batch, today's local loss.
            single = rk.RSPoseLoss(mode)(model(images), tgt, weights)
            single.backward()
            # DDP: each rank its own slice, sync=True.
            synced = rk.RSPoseLoss(mode, sync=True)(ddp(images[mine]), _pick(tgt, mine),
                                                    weights[mine])
            synced.backward()
            torch.testing.assert_close(synced, single.detach(), **TOL)
            for got, want in zip(_grads(ddp.module), _grads(model)):
                torch.testing.assert_close(got, want, **TOL)
            if mode == "heatmap":   # without sync the gradient is measurably different
                ddp.zero_grad()
                rk.RSPoseLoss(mode)(ddp(images[mine]), _pick(tgt, mine), weights[mine]).backward()
                miss = max((a - b).abs().max() for a, b in zip(_grads(ddp.module), _grads(model)))
                assert miss > 1e-6, miss
        for check in checks:
            globals()[check](rank, world, sizes, blank, mine)
        # Every rank past its last collective before any tears down: a rank that closed its
        # gloo pairs while a peer still completed the last all-gather aborted that peer
        # ("terminate called without an active exception", seen once under CI load).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _heatmaps(sizes, blank, seed=5):
    g = torch.Generator().manual_seed(seed)
    _, targets, _, weights = global_batch(sum(sizes), 11, blank)
    # A few equal maxima, so arg-max ties and confidence ties occur across ranks.
    h = torch.round(torch.randn(sum(sizes), K, H, W, generator=g, dtype=torch.float64) * 4) / 4
    return h, targets, weights


def check_functions(rank, world, sizes, blank, mine):
    """instance_sort_loss / spatial_rs_loss on leaf tensors: value = the global loss,
    gradient = W × this rank's slice of the global gradient; None stays local."""
    h, t, w = _heatmaps(sizes, blank)
    group = dist.group.WORLD
    want = rk.instance_sort_loss(h.requires_grad_(True), t, w)
    want.backward()
    local = h[mine].detach().requires_grad_(True)
    got = rk.instance_sort_loss(local, t[mine], w[mine], process_group=group)
    got.backward()
    torch.testing.assert_close(got, want.detach(), **TOL)
    torch.testing.assert_close(local.grad, world * h.grad[mine], **TOL)

    # process_group=None: this rank's items only (what it was before docs/DESIGN.md §10).
    alone = h[mine].detach().requires_grad_(True)
    kept = rk.instance_sort_loss(alone, t[mine], w[mine], process_group=None)
    kept.backward()
    ref = h[mine].detach().requires_grad_(True)
    rk.instance_sort_loss(ref, t[mine], w[mine], backend="torch").backward()
    torch.testing.assert_close(alone.grad, ref.grad, rtol=1e-12, atol=0)
    if 0 < float(w[mine].sum()) < float(w.sum()):   # items here and elsewhere: they differ
        assert abs(float(kept.detach()) - float(want.detach())) > 1e-6

    # The spatial mean and sum, with weights that carry a gradient too.
    for reduction in ("mean", "sum"):
        hh = h.detach().requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        one = rk.spatial_rs_loss(hh, t, ww, reduction=reduction)
        one.loss.backward()
        hl = h[mine].detach().requires_grad_(True)
        wl = w[mine].clone().requires_grad_(True)
        out = rk.spatial_rs_loss(hl, t[mine], wl, reduction=reduction, process_group=group)
        out.loss.backward()
        for a, b in zip(out, one):
            torch.testing.assert_close(a, b.detach(), **TOL)
        torch.testing.assert_close(hl.grad, world * hh.grad[mine], **TOL)
        torch.testing.assert_close(wl.grad, world * ww.grad[mine], **TOL)

    with pytest.raises(ValueError, match="process_group"):
        rk.spatial_rs_loss(h[mine], t[mine], w[mine], reduction="none", process_group=group)
    with pytest.raises(TypeError, match="process_group"):
        rk.instance_sort_loss(h[mine], t[mine], w[mine], process_group="WORLD")


def check_host_group(rank, world, sizes, blank, mine):
    """A group without a CPU side (NCCL) exchanges the counts through a gloo group of its
    ranks: forced here by pretending gloo has none."""
    h, t, w = _heatmaps(sizes, blank, seed=6)
    want = rk.instance_sort_loss(h, t, w)
    saved = distributed.has_cpu_side
    distributed.has_cpu_side = lambda backend: False
    try:
        got = rk.instance_sort_loss(h[mine], t[mine], w[mine], process_group=dist.group.WORLD)
        assert dist.group.WORLD in distributed._HOST_GROUPS
    finally:
        distributed.has_cpu_side = saved
    torch.testing.assert_close(got, want, **TOL)


def check_compile(rank, world, sizes, blank, mine):
    """Under torch.compile: eager-equal loss and gradient, and graph breaks at one site only,
    the item gather (dynamo splits each enclosing frame there too, unless
    torch._dynamo.config.nested_graph_breaks is on)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters
    h, t, w = _heatmaps(sizes, blank, seed=7)
    loss_fn = rk.RSPoseLoss(sync=True)

    def step(x):
        return loss_fn(x, t[mine], w[mine])

    eager_in = h[mine].detach().requires_grad_(True)
    eager = step(eager_in)
    eager.backward()
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")
    comp_in = h[mine].detach().requires_grad_(True)
    comp = torch.compile(step, backend=backend)(comp_in)
    comp.backward()
    reasons = list(counters["graph_break"])
    assert backend.frame_count >= 2 and reasons, (backend.frame_count, reasons)
    assert all("gather_items" in r for r in reasons), reasons
    torch.testing.assert_close(comp, eager.detach(), **TOL)
    torch.testing.assert_close(comp_in.grad, eager_in.grad, **TOL)


def _spawn(tmp_path, world, sizes, blank, checks):
    mp.spawn(_worker, args=(world, str(tmp_path / "rendezvous"), sizes, blank, checks),
             nprocs=world, join=True)


def test_two_ranks_uneven_batches_and_a_rank_without_valid_items(tmp_path):
    # rank 1 holds two instances with no visible keypoint
    _spawn(tmp_path, 2, (3, 2), blank=(3, 4), checks=("check_functions", "check_compile"))


def test_three_ranks_one_with_an_empty_batch(tmp_path):
    # rank 1 holds no instance at all (B = 0); instance 0 has no visible keypoint
    _spawn(tmp_path, 3, (2, 0, 3), blank=(0,), checks=("check_functions", "check_host_group"))


@pytest.mark.parametrize("mode", ["heatmap", "simcc"])
def test_sync_without_process_group_is_a_noop(mode):
    assert not dist.is_initialized()
    images, targets, simcc_targets, weights = global_batch(3, 3, blank=(1,))
    tgt = targets if mode == "heatmap" else simcc_targets
    model = TinyPoseNet(mode)
    results = []
    for sync in (False, True):
        model.zero_grad()
        loss = rk.RSPoseLoss(mode, sync=sync)(model(images), tgt, weights)
        loss.backward()
        results.append((loss.detach(), _grads(model)))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_process_group_without_init_is_an_error():
    h, t, w = _heatmaps((2,), ())
    with pytest.raises(RuntimeError, match="process_group"):
        rk.instance_sort_loss(h, t, w, process_group=object())
    with pytest.raises(ValueError, match="sync"):
        rk.RSPoseLoss(sync="yes")


@pytest.mark.parametrize("backend, cpu", [("gloo", True), ("nccl", False), ("mpi", True),
                                          ("cpu:gloo,cuda:nccl", True), ("cuda:nccl", False)])
def test_which_backends_take_the_counts_on_the_host(backend, cpu):
    assert distributed.has_cpu_side(backend) is cpu
