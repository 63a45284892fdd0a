"""DistributedDataParallel: 2 processes (gloo, CPU) train exactly like one process on the full batch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deformconv.nn import DeformConv2dPack, ModulatedDeformConv2dPack
from deploy_helpers import randomize_offsets

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)

WORLD_SIZE = 2
STEPS = 3
BATCH = 8  # the global batch; each process gets BATCH / WORLD_SIZE images


def make_model() -> nn.Module:
    """A small classifier with a DCNv1 and a DCNv2 layer, whose offset convolutions are not zero."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        DeformConv2dPack(8, 8, 3, stride=2, padding=1, bias=True),
        nn.ReLU(),
        ModulatedDeformConv2dPack(8, 16, 3, padding=1, offset_groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    return randomize_offsets(model, pixels=1.0)


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 3, 12, 12, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator))
        for _ in range(STEPS)
    ]


def train(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for images, labels in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()


def worker(rank: int, init_method: str, out_dir: str) -> None:
    """One DDP process: trains on its share of every batch, then saves its parameters."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE)
    try:
        model = DistributedDataParallel(make_model())
        shards = [(x.chunk(WORLD_SIZE)[rank], y.chunk(WORLD_SIZE)[rank]) for x, y in make_batches()]
        train(model, shards)
        torch.save(model.module.state_dict(), Path(out_dir) / f"rank{rank}.pt")
        # Both ranks are done before either tears down: a rank that destroys the group while its
        # peer still talks to it can abort in gloo's connection threads.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_on_the_full_batch(tmp_path):
    init_method = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(worker, args=(init_method, str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    single = make_model()
    initial = {name: value.clone() for name, value in single.state_dict().items()}
    train(single, make_batches())
    expected = single.state_dict()
    for rank in range(WORLD_SIZE):
        trained = torch.load(tmp_path / f"rank{rank}.pt")
        assert trained.keys() == expected.keys()
        for name, value in trained.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {name}")
    # The offset convolutions learned (their gradients were averaged across processes too).
    for name in ("2.conv_offset.weight", "4.conv_offset.weight", "4.conv_offset.bias"):
        assert not torch.equal(expected[name], initial[name]), name
