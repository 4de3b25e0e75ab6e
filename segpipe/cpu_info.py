"""What /proc/cpuinfo says about this machine's CPU (nothing where the file does not exist)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

CPU_INFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo, by name ('model name', 'flags', ...); empty elsewhere."""
    try:
        text = CPU_INFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def native_bf16() -> bool:
    """Whether this CPU has BF16 instructions (AVX512-BF16 or AMX)."""
    return bool(set(cpu_fields().get("flags", "").split()) & NATIVE_BF16_FLAGS)


def cpu_name() -> str:
    """The CPU's model name, or its architecture where /proc/cpuinfo does not name it."""
    return cpu_fields().get("model name") or os.uname().machine
