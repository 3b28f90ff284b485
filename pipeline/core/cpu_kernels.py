"""Which CPU kernels TensorFlow runs (`train.cpu_kernels`), chosen before TensorFlow is imported.

TensorFlow's x86 Linux wheels hold two sets of CPU kernels for convolutions, matrix products, pooling and
fused BatchNorm: Eigen's, and oneDNN's (`_MklNative*` ops). Since TensorFlow 2.9 oneDNN's run by default
only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (tensorflow/community RFC 400, "Enabling oneDNN
operations for x86 CPUs"; TensorFlow 2.9 release notes), so on every older x86 CPU (AVX2 only: AMD EPYC
before Zen 4, Intel before Cascade Lake) Eigen's run. Eigen's convolution gradient with respect to the
input is slow there: 2-7x its own forward pass for airbench94's 3x3 convolutions at batch 512, where
oneDNN's is about as fast as the forward pass. On a 2-core AVX2 EPYC, oneDNN's kernels train the shipped
models 1.15-1.64x faster (cifar10_fast 1.38x, cifar10_deep 1.51x, lenet 1.64x, simple_cnn 1.47x,
MobileNetV2 1.15x); forward passes are faster for the plain conv nets at batch 64 (1.03-1.54x) but
MobileNetV2's is slower (0.86x), and one image at a time is no faster: benchmarks/RESULTS.md, "Eigen's vs
oneDNN's CPU kernels". So only `train` changes the kernels (`train.cpu_kernels`, oneDNN by default); the
inference commands (evaluate, predict, serve) keep TensorFlow's rule. PyTorch uses oneDNN on every x86 CPU.
TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported: `train` sets it from the config after
parsing it and before importing TensorFlow; its data workers inherit it, and `launch`'s workers,
`tune`'s trials and `audit`'s folds are `train` processes that choose from their own config.

Also the CPU's feature flags (`cpu_flags`, `cpu_has_bfloat16`: `train.mixed_precision: auto`'s rule, which the
anchor benchmark applies in its own virtualenv). No TensorFlow here.
"""

from __future__ import annotations

import os
import platform
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
# train.cpu_kernels -> the variable's value (None: not set, TensorFlow's own rule)
VALUES = {"onednn": "1", "eigen": "0", "auto": None}


def choose(setting: str, environ=None, *, machine: str | None = None) -> str | None:
    """Sets TF_ENABLE_ONEDNN_OPTS for this process and its children (data workers) as `setting` asks, on an
    x86 machine, unless the user set the variable (their value stands) or TensorFlow is already imported
    (too late to change: left as it is).

    Args:
        setting: a key of VALUES ("onednn", "eigen" or "auto").
        environ: the environment to change (default os.environ).
        machine: the CPU architecture (default platform.machine()); oneDNN's custom ops are x86 only.
    Returns:
        the value this call set ("1" or "0"), else None.
    Raises:
        ValueError: for a setting that is not a key of VALUES.
    """
    if setting not in VALUES:
        raise ValueError(f"cpu_kernels must be one of {sorted(VALUES)}. Received: setting={setting!r}")
    environ = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    value = VALUES[setting]
    if value is None or VARIABLE in environ or machine not in X86_MACHINES or "tensorflow" in sys.modules:
        return None
    environ[VARIABLE] = value
    return value


def describe(environ=None) -> str:
    """The run log's line on the CPU kernels TensorFlow was imported with (from the variable)."""
    value = (os.environ if environ is None else environ).get(VARIABLE)
    if value is None:
        return "CPU kernels: TensorFlow's choice (oneDNN on CPUs with AVX512_VNNI, AVX512_BF16 or AMX, else Eigen)"
    kind = "Eigen" if value.strip().lower() in ("0", "false", "off") else "oneDNN"
    return f"CPU kernels: {kind} ({VARIABLE}={value})"


# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic: AVX-512 BF16 (Cooper Lake, Zen 4 and
# later) or AMX (Sapphire Rapids and later). Without them TensorFlow and PyTorch emulate bfloat16 through
# float32, far slower than float32 itself: cifar10_fast 8 vs 86 images/s on an AVX2 EPYC (2 cores),
# against 500 vs 458 with AMX (benchmarks/RESULTS.md, "bfloat16 without bfloat16 hardware").
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags as Linux names them ("avx2", "avx512f", "amx_bf16", ...). `cpuinfo`: the text
    of /proc/cpuinfo (read when None); an empty set where it cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bfloat16 instructions (`BFLOAT16_CPU_FLAGS`); False where the flags cannot
    be read, the safe answer. `cpuinfo` as in `cpu_flags`."""
    return not cpu_flags(cpuinfo).isdisjoint(BFLOAT16_CPU_FLAGS)
