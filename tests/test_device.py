"""p2p_lib.device: what is detected, and which speed settings are picked for it."""
import pytest
import torch

import p2p_lib.device as device_module
from p2p_lib.device import cpu_capabilities, cpu_flags, cpu_has_fast_bf16, cpu_model, pick_speed

AMX = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx2", "avx512f", "avx512_bf16"}
AVX512 = {"avx2", "avx512f"}
AVX2 = {"avx2", "fma"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()  # no /proc/cpuinfo (macOS, Windows): nothing detected
    assert cpu_model(info) == "Some CPU"
    assert cpu_model(tmp_path / "missing")  # no /proc/cpuinfo: the platform's own name, never empty


@pytest.mark.parametrize("flags, isa, fast", [(AMX, "AMX", True), (AVX512_BF16, "AVX-512-BF16", True),
                                              (AVX512, "AVX-512", False), (AVX2, "AVX2", False)])
def test_the_cpu_class_and_whether_bf16_is_native(flags, isa, fast):
    assert cpu_capabilities(flags)["isa"] == isa
    assert cpu_has_fast_bf16(flags, environ={}) is fast
    assert cpu_has_fast_bf16(flags, environ={"P2P_BF16": "off"}) is False  # the switch to act as a CPU without


@pytest.mark.parametrize("flags, dtype, channels_last", [(AMX, torch.bfloat16, True), (AVX512_BF16, torch.bfloat16, True),
                                                         (AVX512, None, False), (AVX2, None, False)])
def test_the_cpu_default_takes_bf16_only_where_the_hardware_has_it(monkeypatch, flags, dtype, channels_last):
    monkeypatch.setattr(device_module, "cpu_flags", lambda *a: set(flags))
    monkeypatch.delenv("P2P_BF16", raising=False)
    speed = pick_speed("cpu")
    assert (speed.amp_dtype, speed.channels_last, speed.fused_adam, speed.grad_scaler) == (dtype, channels_last, True, False)
    assert ("bf16 autocast" if dtype else "float32") in speed.describe()
    monkeypatch.setenv("P2P_BF16", "off")
    switched = pick_speed("cpu")
    assert switched.amp_dtype is None  # an AMX machine can check the budget of one without bf16
    # and it says which of the two made it float32: the switch, or a CPU without native bf16
    assert ("P2P_BF16=off" in switched.describe()) is (dtype is not None), switched.describe()


def test_switching_the_fast_settings_off(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_flags", lambda *a: set(AMX))
    monkeypatch.delenv("P2P_BF16", raising=False)
    assert pick_speed("cpu", amp="off").amp_dtype is None
    assert pick_speed("cpu", channels_last=False).channels_last is False
    plain = pick_speed("cpu", plain=True)
    assert (plain.amp_dtype, plain.channels_last, plain.fused_adam, plain.cudnn_benchmark) == (None, False, False, False)
    monkeypatch.setattr(device_module, "cpu_flags", lambda *a: set(AVX2))
    asked = pick_speed("cpu", amp="bf16")  # asked for explicitly: given, with a warning in the description
    assert asked.amp_dtype == torch.bfloat16 and "SLOWER" in asked.describe()
    with pytest.raises(ValueError, match="float16 autocast is for GPUs"):
        pick_speed("cpu", amp="fp16")
    with pytest.raises(ValueError, match="choose one of auto, bf16, fp16, off"):
        pick_speed("cpu", amp="fast")


def test_cuda_defaults_without_a_gpu(monkeypatch):
    # what CUDA would get, decided without touching a GPU: bf16 where supported, else fp16 with a scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    speed = pick_speed("cuda")
    assert (speed.amp_dtype, speed.grad_scaler, speed.channels_last, speed.cudnn_benchmark) == (torch.float16, True, True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_speed("cuda").amp_dtype == torch.bfloat16 and not pick_speed("cuda").grad_scaler
    with pytest.raises(ValueError, match="no bfloat16 support"):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        pick_speed("cuda", amp="bf16")


def test_torch_compile_only_when_asked():
    assert pick_speed("cpu").compile is False and "torch.compile" not in pick_speed("cpu").describe()
    asked = pick_speed("cpu", compile=True)
    assert asked.compile and "torch.compile" in asked.describe()
    with pytest.raises(ValueError, match="--plain is the eager step"):
        pick_speed("cpu", plain=True, compile=True)
