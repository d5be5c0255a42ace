"""The pieces of the images that run outside a container engine: the numba CPU target the
entrypoint picks, and the warm-up's check that every cached kernel was compiled. The images
themselves are checked by `make test-images` (tests/images/check_images.py)."""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from smalgo.containers import entrypoint
from smalgo.containers.warm_cache import uncompiled_kernels

V3_FLAGS = entrypoint.X86_64_V3_FLAGS | {"avx512f", "sse2"}


def test_portable_target_on_an_x86_64_v3_cpu():
    env = {"SMALGO_NUMBA_CPU": "portable"}
    assert entrypoint.choose_cpu_target(env, "x86_64", V3_FLAGS) == "x86-64-v3"
    assert env["NUMBA_CPU_NAME"] == "x86-64-v3" and env["NUMBA_CPU_FEATURES"] == ""


@pytest.mark.parametrize(
    "machine, flags", [("x86_64", V3_FLAGS - {"avx2"}), ("x86_64", frozenset()), ("aarch64", V3_FLAGS)]
)
def test_portable_target_falls_back_to_generic(machine, flags):
    env = {"SMALGO_NUMBA_CPU": "portable"}
    assert entrypoint.choose_cpu_target(env, machine, flags) == "generic"
    assert env["NUMBA_CPU_NAME"] == "generic" and env["NUMBA_CPU_FEATURES"] == ""


@pytest.mark.parametrize(
    "env", [{}, {"SMALGO_NUMBA_CPU": "native"}, {"SMALGO_NUMBA_CPU": "portable", "NUMBA_CPU_NAME": "skylake-avx512"}]
)
def test_no_portable_request_or_the_users_own_choice_is_left_alone(env):
    before = dict(env)
    assert entrypoint.choose_cpu_target(env, "x86_64", V3_FLAGS) is None
    assert env == before


def test_host_cpu_flags_reads_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert entrypoint.host_cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "fma"}
    assert entrypoint.host_cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_the_smalgo_command_applies_the_target_before_numba_loads():
    # A stand-in for the CLI that reports what numba was configured with when it was imported.
    code = textwrap.dedent("""
        import sys, types
        cli = types.ModuleType("smalgo.containers.cli")
        def main(argv):
            import numba
            print(numba.config.CPU_NAME, repr(numba.config.CPU_FEATURES))
            return 0
        cli.main = main
        sys.modules["smalgo.containers.cli"] = cli
        from smalgo.containers import entrypoint
        sys.exit(entrypoint.main([]))
    """)
    env = dict(os.environ, SMALGO_NUMBA_CPU="portable")
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cpu_name, features = result.stdout.split()
    assert cpu_name in ("x86-64-v3", "generic") and features == "''"


def test_uncompiled_kernels_names_cached_kernels_never_compiled(tmp_path, monkeypatch):
    package = tmp_path / "warmcheckpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kernels.py").write_text(
        textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def used(x):
            return x + 1

        @njit(cache=True)
        def never_called(x):
            return x - 1

        @njit(cache=True, inline="always")
        def inlined(x):
            return x * 2

        @njit
        def not_cached(x):
            return x
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("warmcheckpkg.kernels")
    assert sorted(uncompiled_kernels("warmcheckpkg")) == [
        "warmcheckpkg.kernels.never_called",
        "warmcheckpkg.kernels.used",
    ]
    module.used(1)
    assert uncompiled_kernels("warmcheckpkg") == ["warmcheckpkg.kernels.never_called"]
