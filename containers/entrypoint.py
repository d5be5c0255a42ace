"""The `smalgo` command's first step: settle numba's code-generation target, then run the CLI.

numba keys its on-disk cache on the CPU it compiles for (LLVM's CPU name and feature list). An
image's cache is compiled at build time, on the build machine's CPU; on a SageMaker instance
with another CPU model every kernel would miss the cache and compile again, 30-60 s at the
start of each job and of each endpoint. So images set SMALGO_NUMBA_CPU=portable, and this
module turns that into a fixed, widely supported target before numba is imported:

    x86-64-v3   (AVX2, FMA, BMI2: every x86 SageMaker instance type since the Haswell ones)
                when the host has it; the cache warmed at build time is for this target;
    generic     on an older or non-x86 CPU: correct everywhere, but it compiles on first use.

Set NUMBA_CPU_NAME yourself to override; leave SMALGO_NUMBA_CPU unset (outside images) and numba
compiles for the host CPU, its default.
"""

from __future__ import annotations

import os
import platform
import sys

TARGET_VARIABLE = "SMALGO_NUMBA_CPU"
PORTABLE = "portable"
PORTABLE_CPU_NAME = "x86-64-v3"
FALLBACK_CPU_NAME = "generic"
# /proc/cpuinfo flags of the x86-64-v3 micro-architecture level (which includes v2's).
X86_64_V3_FLAGS = frozenset(
    {
        "cx16",
        "lahf_lm",
        "popcnt",
        "sse4_1",
        "sse4_2",
        "ssse3",  # v2
        "avx",
        "avx2",
        "bmi1",
        "bmi2",
        "f16c",
        "fma",
        "abm",
        "movbe",
        "xsave",  # v3 ("abm" is LZCNT)
    }
)


def host_cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags Linux reports (those of the first processor); empty if unknown."""
    try:
        with open(cpuinfo_path, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def choose_cpu_target(environ, machine: str | None = None, flags: frozenset[str] | None = None) -> str | None:
    """Set NUMBA_CPU_NAME and NUMBA_CPU_FEATURES in `environ` when it asks for the portable
    target and has no numba CPU setting of its own; returns the CPU name chosen, else None."""
    if environ.get(TARGET_VARIABLE, "").strip().lower() != PORTABLE or "NUMBA_CPU_NAME" in environ:
        return None
    machine = platform.machine() if machine is None else machine
    flags = host_cpu_flags() if flags is None else flags
    is_v3 = machine in ("x86_64", "AMD64") and X86_64_V3_FLAGS <= flags
    name = PORTABLE_CPU_NAME if is_v3 else FALLBACK_CPU_NAME
    environ["NUMBA_CPU_NAME"] = name
    # Empty: exactly the features the CPU name implies, none of the host's extras (which would
    # be part of the cache key again).
    environ["NUMBA_CPU_FEATURES"] = ""
    return name


def main(argv: list[str] | None = None) -> int:
    if "numba" not in sys.modules:  # numba reads its settings once, when it is first imported
        choose_cpu_target(os.environ)
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
