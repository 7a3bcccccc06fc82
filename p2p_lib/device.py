"""Which device to run on and which speed settings pay off there (hand-written plumbing: hardware
detection is not a pix2pix lesson; lesson 06 shows what it picks and why).

    device = pick_device()                 # CUDA, else Apple's MPS, else the CPU
    speed = pick_speed(device)             # bf16 autocast only where the hardware has it, ...
    print(speed.describe())

Rules (each measured: `benchmarks/train_step.py`):
- bfloat16 autocast on CPUs with AMX or AVX-512-BF16 (oneDNN then runs bf16 convolutions natively);
  never on other CPUs, where every bf16 op is emulated and a step is many times SLOWER than float32.
  `P2P_BF16=off` makes a CPU that has it behave as one without (to check the budget of such machines).
- On CUDA: bf16 where the GPU has it, otherwise float16 with a gradient scaler; cuDNN autotuning.
- channels_last (NHWC) where the kernels prefer it: CUDA and bf16 CPUs; not float32 CPUs, where it
  measured no faster.
- fused Adam everywhere PyTorch has it (CPU, CUDA): one pass over the weights instead of several.
- torch.compile only when asked (`compile=True`, `p2p train --compile`): on a 2-core CPU it measured no
  faster and takes about a minute to compile; it needs a C++ compiler. Try it on a GPU with the benchmark.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import torch

__all__ = ["pick_device", "cpu_flags", "cpu_model", "cpu_capabilities", "cpu_has_fast_bf16", "SpeedSettings", "pick_speed",
           "AMP_CHOICES"]

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the one named ('cpu', 'cuda:1', 'mps'), else CUDA when there is a GPU,
    else Apple's MPS, else the CPU (the fallback: it works everywhere, only slower)."""
    if device is not None:
        return _checked_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _checked_device(name: str | torch.device) -> torch.device:
    "The named device, if this machine has it; ValueError saying what it has otherwise."
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(name)!r}: use cpu, cuda, cuda:N (N from 0) or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(name)!r}: {why}; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(name)!r}: this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(name)!r}: Apple's MPS is not available here; use cpu")
    elif device.type != "cpu":
        raise ValueError(f"device {str(name)!r}: this library runs on cpu, cuda or mps")
    return device


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    "The CPU's feature flags as Linux lists them (an empty set where there is no /proc/cpuinfo)."
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    "The CPU's name as Linux gives it (its first \"model name\"), else what the platform module knows."
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capabilities(flags: set[str] | None = None) -> dict:
    "What the CPU offers for this work: its ISA class and whether it has AMX / AVX-512-BF16 (bf16 in hardware)."
    flags = cpu_flags() if flags is None else flags
    amx, avx512_bf16 = "amx_bf16" in flags, "avx512_bf16" in flags
    if amx:
        isa = "AMX"
    elif avx512_bf16:
        isa = "AVX-512-BF16"
    elif "avx512f" in flags:
        isa = "AVX-512"
    elif "avx2" in flags:
        isa = "AVX2"
    else:
        isa = platform.machine() or "unknown"
    return {"isa": isa, "amx_bf16": amx, "avx512_bf16": avx512_bf16, "torch_isa": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def cpu_has_fast_bf16(flags: set[str] | None = None, environ=os.environ) -> bool:
    "Whether bf16 arithmetic is native on this CPU (AMX or AVX-512-BF16), unless P2P_BF16=off says to act as if not."
    if environ.get("P2P_BF16", "").lower() in ("off", "0", "no", "false"):
        return False
    caps = cpu_capabilities(flags)
    return caps["amx_bf16"] or caps["avx512_bf16"]


@dataclasses.dataclass(frozen=True)
class SpeedSettings:
    """How a training step runs: autocast dtype (None: float32), memory layout, fused Adam, cuDNN autotuning.
    The arithmetic (and so the results, to rounding) is set by amp_dtype alone."""
    device: str
    amp_dtype: torch.dtype | None = None
    grad_scaler: bool = False       # float16 needs loss scaling; bfloat16 does not
    channels_last: bool = False
    fused_adam: bool = True
    cudnn_benchmark: bool = False
    compile: bool = False           # torch.compile G and D (nn.Module.compile: in place, same state_dict keys)
    why: tuple[str, ...] = ()

    def describe(self) -> str:
        amp = {None: "float32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}
        parts = [self.device, amp[self.amp_dtype], "channels_last" if self.channels_last else "NCHW",
                 "fused Adam" if self.fused_adam else "plain Adam"] + (["cuDNN autotune"] if self.cudnn_benchmark else []) \
            + (["torch.compile"] if self.compile else [])
        return ", ".join(parts) + (f" ({'; '.join(self.why)})" if self.why else "")


def _cpu_amp_reason(fast: bool) -> str:
    "Why auto picked what it did on this CPU: its hardware, or the P2P_BF16=off switch."
    if fast:
        return "bf16: the CPU has AMX/AVX-512-BF16"
    if cpu_has_fast_bf16(environ={}):
        return "float32: P2P_BF16=off (this CPU has native bf16; acting as one without)"
    return "float32: no AMX/AVX-512-BF16 on this CPU (bf16 would be emulated, many times slower)"


def _amp_dtype(device: torch.device, amp: str, why: list[str]) -> torch.dtype | None:
    if amp == "off":
        return None
    if device.type == "cpu":
        if amp == "fp16":
            raise ValueError("--amp fp16: float16 autocast is for GPUs; on a CPU use --amp bf16")
        fast = cpu_has_fast_bf16()
        if amp == "auto":
            why.append(_cpu_amp_reason(fast))
            return torch.bfloat16 if fast else None
        if not fast:
            why.append("bf16 asked for, but this CPU has no native bf16: expect it to be SLOWER than float32")
        return torch.bfloat16
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if amp == "bf16" and not bf16:
            raise ValueError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
        return torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16) else torch.float16
    if amp != "auto":
        raise ValueError(f"--amp {amp} is not supported on {device.type} here; use --amp off")
    return None


def pick_speed(device: str | torch.device, amp: str = "auto", channels_last: bool | None = None,
               plain: bool = False, compile: bool = False) -> SpeedSettings:
    """The fastest settings that keep quality on `device` (see the module's rules). `amp`: auto | bf16 |
    fp16 | off; `channels_last`: None picks, True/False forces; `plain`: float32, NCHW, eager, plain Adam,
    no autotuning (the official recipe's arithmetic, for comparisons); `compile`: torch.compile the networks
    (not with `plain`)."""
    device = torch.device(device)
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp {amp}: choose one of {', '.join(AMP_CHOICES)}")
    if plain:
        if compile:
            raise ValueError("--plain is the eager step: drop --compile, or --plain")
        return SpeedSettings(str(device), fused_adam=False, why=("plain: the official recipe's arithmetic",))
    why: list[str] = []
    dtype = _amp_dtype(device, amp, why)
    if channels_last is None:
        channels_last = device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16)
    return SpeedSettings(str(device), dtype, grad_scaler=dtype == torch.float16 and device.type == "cuda",
                         channels_last=channels_last, fused_adam=device.type in ("cpu", "cuda"),
                         cudnn_benchmark=device.type == "cuda", compile=compile, why=tuple(why))
