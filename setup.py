"""Builds the native core and packages the CRDs; the project's metadata lives in pyproject.toml.

The CRDs have one copy in the repository, the Helm chart's (agent/chart/crds). build_py copies
them into the built mover_k8s/crds, so that a wheel carries them for `mover agent crds`; an
editable install reads agent/chart/crds itself (mover_k8s.cli.crds_dir).

setuptools runs this file as __main__ (build backend, `setup.py` commands); tests import it to
check build_py without building anything.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py as _build_py

ROOT = Path(__file__).resolve().parent
CRDS = Path("agent", "chart", "crds")  # relative to ROOT, as setuptools wants source paths
PACKAGED_CRDS = Path("mover_k8s", "crds")  # in the built tree (the wheel)


def crd_sources() -> list[Path]:
    """The chart's CRD files, relative to the project root; an error if there are none."""
    found = sorted(path.relative_to(ROOT) for path in (ROOT / CRDS).glob("*.yaml"))
    if not found:
        raise FileNotFoundError(
            f"no CRDs in {ROOT / CRDS}: the wheel's mover_k8s/crds is built from the Helm "
            "chart's crds/ (a build context must include agent/chart/crds)"
        )
    return found


class build_py(_build_py):  # setuptools' command names are lower case
    """build_py that also copies agent/chart/crds/*.yaml into the built mover_k8s/crds."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the source checkout is used as it is: mover_k8s reads agent/chart/crds
        self.mkpath(str(Path(self.build_lib) / PACKAGED_CRDS))
        for built, source in self._packaged().items():
            self.copy_file(source, built)

    def _packaged(self) -> dict[str, str]:
        """Each CRD's path in the built tree -> its source."""
        target = Path(self.build_lib) / PACKAGED_CRDS
        return {str(target / source.name): str(ROOT / source) for source in crd_sources()}

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *self._packaged()]

    def get_output_mapping(self) -> dict[str, str]:
        # An editable install in strict mode links these; the default mode ignores them.
        return {**super().get_output_mapping(), **self._packaged()}

    def get_source_files(self) -> list[str]:
        # What an sdist carries besides the packages: a wheel built from it needs the CRDs too.
        return [*super().get_source_files(), *(source.as_posix() for source in crd_sources())]


def main() -> None:
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    native = Extension(
        "mover._native.cdc",
        sources=["ext/cdc.pyx", "ext/cdc_kernel.c", "ext/cdc_avx512.c"],
        include_dirs=["ext"],
        # Portable baseline: the AVX-512 kernel carries its own target attribute and is chosen
        # at run time by CPU features, so no -march here.
        extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
    )

    index_run = Extension(
        "mover._native.index_run",
        sources=["ext/index_run.pyx"],
        extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
    )

    setup(
        ext_modules=cythonize([native, index_run], compiler_directives={"language_level": "3"}),
        cmdclass={"build_py": build_py},
    )


if __name__ == "__main__":
    main()
