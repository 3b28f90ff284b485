"""airbench94 itself (Keller Jordan's `airbench` package, PyTorch) on our CIFAR-10 split, beside `cifar10_fast`.

Issue 24 part 1: the anchor's own code trained on the mirror's JPEG CIFAR-10 decoded exactly as the pipeline
decodes it (accurate IDCT: the arrays of `data/cifar10/cifar10.npz`), on the same 45,000 training images
(the 5,000 validation images `cifar10_fast` holds out are not used) and scored on the same 10,000 test images.
PyTorch lives in its own virtualenv (`requirements-anchor.txt`), never in the product's:

    python3.11 -m venv .venv-anchor && .venv-anchor/bin/pip install -r requirements-anchor.txt
    # 1. our split, written by the product's own data code (main venv):
    .venv/bin/python -m benchmarks.anchor_airbench export --out /tmp/anchor-cifar10.npz
    # 2. the anchor on it (anchor venv): its 10 epochs (9.9 as published) or our 24, with its TTA
    .venv-anchor/bin/python benchmarks/anchor_airbench.py train --data /tmp/anchor-cifar10.npz --epochs 9.9
    # 3. the same network's training images/s in PyTorch, float32 and bfloat16
    .venv-anchor/bin/python benchmarks/anchor_airbench.py speed

What is the anchor's and what is changed to run it on a CPU: the network (`make_net94`'s layers), the
optimizer, schedule, Lookahead, whitening initialisation, whitening-bias epochs, label smoothing, alternating
flip, translate, TTA (level 2) and the training loop are airbench's own functions, called unchanged. Changed:
the data loader reads our arrays instead of torchvision's download (torchvision itself is not installed) (airbench's `CifarLoader.__iter__`, which
does the augmentation, is kept), the network is built in float32 on the CPU instead of `.half().cuda()`
(bfloat16 by autocast with `--precision bfloat16`), and airbench's CUDA event timer is replaced by a wall
clock. Output: one JSON line (and `--out FILE`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def export(out: Path, experiment: str) -> None:
    """Writes the experiment's train and test splits as uint8 [N, 32, 32, 3] arrays with int64 labels."""
    sys.path.insert(0, str(PROJECT))
    import numpy as np

    from pipeline.data.splits import Splits
    from pipeline.experiment import load_experiment

    config = load_experiment(experiment)
    splits = Splits.from_config(config)
    (train_x, train_y), (test_x, test_y) = splits.train, splits.test
    np.savez(out, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    print(
        json.dumps(
            {"out": str(out), "train": len(train_y), "validation": len(splits.validation[1]), "test": len(test_y)}
        )
    )


class _WallEvent:
    """Stands in for torch.cuda.Event(enable_timing=True): record() stamps, elapsed_time() in ms."""

    def __init__(self, *args, **kwargs):
        self.stamp = None

    def record(self):
        self.stamp = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.stamp - self.stamp) * 1e3


def _patch_airbench(data_path: Path, precision: str):
    """airbench's train() with a CPU loader, a CPU network and a wall clock; returns (airbench, make_net)."""
    import numpy as np
    import torch
    from torch import nn

    torch.cuda.Event = _WallEvent
    torch.cuda.synchronize = lambda *a, **k: None
    # airbench imports torchvision only for the CIFAR-10 download and T.Normalize, both replaced below; PyPI's
    # torchvision does not import beside the CPU build of torch, so empty modules stand in for it.
    import types

    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    import airbench
    from airbench import lib_airbench94, utils

    arrays = np.load(data_path)

    class ArrayCifarLoader(utils.CifarLoader):
        """airbench's loader (its __iter__ augments and batches) over our arrays, float32 on the CPU."""

        def __init__(self, path, train=True, batch_size=500, aug=None, drop_last=None, shuffle=None, altflip=False):
            split = "train" if train else "test"
            self.epoch = 0
            images = torch.from_numpy(arrays[f"{split}_images"])
            self.labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
            self.classes = list(range(10))
            self.images = (images.float() / 255).permute(0, 3, 1, 2).contiguous()
            self.normalize = lambda x: (x - utils.CIFAR_MEAN.view(1, 3, 1, 1)) / utils.CIFAR_STD.view(1, 3, 1, 1)
            self.proc_images = {}
            self.aug = aug or {}
            self.batch_size = batch_size
            self.drop_last = train if drop_last is None else drop_last
            self.shuffle = train if shuffle is None else shuffle
            self.altflip = altflip

    utils.CifarLoader = ArrayCifarLoader
    lib_airbench94.CifarLoader = ArrayCifarLoader

    class AutocastSequential(nn.Sequential):
        # bfloat16 compute with float32 weights, as Keras' mixed_bfloat16 (airbench runs fp16 on a GPU)
        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return super().forward(x).float()

    def make_net():
        widths = lib_airbench94.hyp["net"]["widths"]
        momentum = lib_airbench94.hyp["net"]["batchnorm_momentum"]
        whiten_width = 2 * 3 * 2**2
        layers = [
            lib_airbench94.Conv(3, whiten_width, 2, padding=0, bias=True),
            nn.GELU(),
            lib_airbench94.ConvGroup(whiten_width, widths["block1"], momentum),
            lib_airbench94.ConvGroup(widths["block1"], widths["block2"], momentum),
            lib_airbench94.ConvGroup(widths["block2"], widths["block3"], momentum),
            nn.MaxPool2d(3),
            lib_airbench94.Flatten(),
            nn.Linear(widths["block3"], 10, bias=False),
            lib_airbench94.Mul(lib_airbench94.hyp["net"]["scaling_factor"]),
        ]
        net = (AutocastSequential if precision == "bfloat16" else nn.Sequential)(*layers)
        net[0].weight.requires_grad = False
        return net.to(memory_format=torch.channels_last)

    return airbench, lib_airbench94, utils, make_net


def train(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    airbench, lib94, utils, make_net = _patch_airbench(args.data, args.precision)
    hyp = lib94.hyp
    loader = utils.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"], altflip=True)
    started = time.perf_counter()
    model = lib94.train94(train_loader=loader, epochs=args.epochs, make_net=make_net, verbose=False)
    train_seconds = time.perf_counter() - started
    test = utils.CifarLoader("cifar10", train=False, batch_size=2000)
    started = time.perf_counter()
    tta = utils.evaluate(model, test, tta_level=hyp["net"]["tta_level"])
    tta_seconds = time.perf_counter() - started
    plain = utils.evaluate(model, test, tta_level=0)
    images = len(loader.labels) * args.epochs
    return {
        "anchor": f"airbench {airbench.__version__ if hasattr(airbench, '__version__') else '0.1.8'} train94",
        "precision": args.precision,
        "epochs": args.epochs,
        "train_images": len(loader.labels),
        "test_images": len(test.labels),
        "test_accuracy_tta": round(tta, 4),
        "test_accuracy_no_tta": round(plain, 4),
        "train_seconds": round(train_seconds, 1),
        "tta_seconds": round(tta_seconds, 1),
        "train_images_per_s": round(images / train_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def speed(args) -> dict:
    """Training images/s of airbench94's network (its loss and optimizer step) on random 32x32 batches."""
    import torch

    rows = {}
    for precision in args.precisions:
        _, _, _, make_net = _patch_airbench(args.data, precision) if args.data else _patch_net_only(precision)
        step = _train_step(make_net(), batch_size=args.batch_size)
        for _ in range(args.warmup):
            step()
        samples = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            samples.append(args.steps * args.batch_size / (time.perf_counter() - started))
        rows[precision] = round(sorted(samples)[len(samples) // 2], 1)
    return {"network": "airbench94", "batch": args.batch_size, "images_per_s": rows, "torch": torch.__version__}


def _train_step(model, *, batch_size: int):
    """One SGD step of `model` on a fixed random batch [batch, 3, 32, 32] float32 (channels-last memory)."""
    import torch
    from torch import nn

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    inputs = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))

    def step():
        loss = loss_fn(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _patch_net_only(precision: str):
    """_patch_airbench without data (the speed probe needs only the network)."""
    import tempfile

    import numpy as np

    path = Path(tempfile.mkdtemp()) / "empty.npz"
    empty = np.zeros((1, 32, 32, 3), np.uint8)
    np.savez(path, train_images=empty, train_labels=np.zeros(1), test_images=empty, test_labels=np.zeros(1))
    return _patch_airbench(path, precision)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write our split (main venv)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--experiment", default="cifar10_fast")
    p = sub.add_parser("train", help="train airbench94 on the exported split (anchor venv)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--epochs", type=float, default=9.9)
    # auto: as cifar10_fast's `train.mixed_precision: auto` on a CPU: bfloat16 only with native bfloat16
    # instructions (emulated, it is ~10x slower than float32: RESULTS, "bfloat16 without bfloat16 hardware")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("speed", help="training images/s of the network in PyTorch (anchor venv)")
    p.add_argument("--data", type=Path)
    p.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if getattr(args, "precision", None) == "auto":
        sys.path.insert(0, str(PROJECT))
        from pipeline.core import cpu_kernels  # no TensorFlow: importable from the anchor's venv

        args.precision = "bfloat16" if cpu_kernels.cpu_has_bfloat16() else "float32"
    if args.command == "export":
        export(args.out, args.experiment)
        return
    result = train(args) if args.command == "train" else speed(args)
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
