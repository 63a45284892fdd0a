"""Data-parallel training of a deformable ResNet-18 with DistributedDataParallel.

Launch it with torchrun (several CPU processes, or one process per GPU), e.g. on one machine:

    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py
    torchrun --standalone --nproc_per_node=4 examples/train_ddp.py --device cuda --amp

CPU processes talk through the gloo backend, GPU processes through nccl (one GPU each). The data
are scikit-learn's 8x8 digits, scaled to 32x32; each process trains on its own shard of every
epoch (DistributedSampler), and the gradients are averaged across processes, offset
convolutions included. Rank 0 prints the loss and the held-out accuracy, and saves the model
with ``--save``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from deformconv.models import resnet18
from deformconv.nn import offset_param_groups


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across processes")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per CPU process (0: default)")
    parser.add_argument("--save", default="", help="where rank 0 saves the trained state dict")
    return parser.parse_args()


def digits(image_size: int = 32) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's digits as 3-channel images, split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits  # the "demo" extra: pip install "deformconv[demo]"

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def main() -> None:
    args = parse_args()
    # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        if args.threads:
            torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size ({args.batch_size}) must be divisible by the {world_size} processes")

    # Every process builds the same model; DDP also broadcasts rank 0's parameters at start.
    torch.manual_seed(0)
    model = resnet18(num_classes=10, deform_stages=(False, True, True, True)).to(device)
    if args.device == "cuda":
        # Batch statistics over the global batch, as one process would compute them.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = DistributedDataParallel(model, device_ids=[local_rank] if args.device == "cuda" else None)
    optimizer = torch.optim.SGD(
        offset_param_groups(model.module, lr=args.lr, offset_lr_mult=0.1, momentum=0.9, weight_decay=1e-4)
    )
    amp_dtype = torch.float16 if args.device == "cuda" else torch.bfloat16
    # float16 gradients need loss scaling; bfloat16 has float32's range and does not.
    scaler = torch.amp.GradScaler(args.device, enabled=args.amp and amp_dtype == torch.float16)

    train_set, test_set = digits()
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=args.batch_size // world_size, sampler=sampler, drop_last=True)
    if rank == 0:
        print(f"{world_size} processes ({args.device}, {dist.get_backend()}), {len(train_set)} training images")

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every process
        model.train()
        start, total, count = time.perf_counter(), torch.zeros((), device=device), 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            with torch.autocast(args.device, dtype=amp_dtype, enabled=args.amp):
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # DDP averages the gradients across processes here
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach()
            count += 1
        dist.all_reduce(total)  # the mean loss over every process's batches
        seconds = time.perf_counter() - start
        if rank == 0:
            accuracy = evaluate(model.module, test_set, device)
            mean = total.item() / (count * world_size)
            print(f"epoch {epoch + 1}: loss {mean:.3f}, test accuracy {accuracy:.3f}, {seconds:.1f} s")

    if rank == 0 and args.save:
        torch.save(model.module.state_dict(), args.save)
        print(f"saved {args.save}")
    dist.destroy_process_group()


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: TensorDataset, device: torch.device) -> float:
    model.eval()
    images, labels = dataset.tensors
    predictions = torch.cat([model(batch.to(device)).argmax(1).cpu() for batch in images.split(256)])
    return (predictions == labels).float().mean().item()


if __name__ == "__main__":
    main()
