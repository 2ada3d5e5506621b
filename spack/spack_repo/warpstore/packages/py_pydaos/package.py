# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyPydaos(PythonPackage):
    """pydaos, the Python bindings of the DAOS client (DAOS containers as dicts).

    pydaos ships with DAOS (src/client/pydaos) and must match the client
    library and agent a system runs; it is not on PyPI. Builtin's ``daos``
    recipe builds the server and client libraries but not these bindings. On
    systems with DAOS (ALCF Aurora: ``module load daos``) the bindings come with
    the system's DAOS client, so this recipe only describes them: declare the
    site's pydaos as an external in packages.yaml (see
    spack/environments/aurora/spack.yaml).
    """

    homepage = "https://docs.daos.io/latest/user/python/"

    license("BSD-2-Clause-Patent")

    version("2.6.4")
    version("2.6.3")
    version("2.6.2")
    version("2.6.1")
    version("2.6.0")
    version("2.4.0")

    has_code = False  # comes with the system's DAOS: see the docstring

    depends_on("python@3.6:", type=("build", "run"))

    requires("platform=linux", msg="DAOS runs on Linux only")

    def install(self, spec, prefix):
        raise InstallError(
            self.spec.format(
                "{name} comes with the system's DAOS client: declare it as an external "
                "in packages.yaml (for example with `modules: [daos]`)"
            )
        )
