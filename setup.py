"""Builds the native core only; the project's metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

native = Extension(
    "mover._native.cdc",
    sources=["ext/cdc.pyx", "ext/cdc_kernel.c", "ext/cdc_avx512.c"],
    include_dirs=["ext"],
    # Portable baseline: the AVX-512 kernel carries its own target attribute and is chosen at
    # run time by CPU features, so no -march here.
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
)

index_run = Extension(
    "mover._native.index_run",
    sources=["ext/index_run.pyx"],
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
)

setup(ext_modules=cythonize([native, index_run], compiler_directives={"language_level": "3"}))
