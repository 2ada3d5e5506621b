# Copyright warpstore developers. SPDX-License-Identifier: MIT
"""Spack recipe for warpstore: pass-by-reference data movement for HPC Python workflows.

    spack repo add <warpstore checkout>/spack
    spack install py-warpstore +mpi +ucx

Variants map one to one onto the Python extras in pyproject.toml (tests keep
the two in agreement), plus the transports that only Spack can build
(``+margo``: Mochi Margo over Mercury/libfabric; ``+daos``: pydaos, shipped
with DAOS). MPI is Spack's virtual ``mpi``, so a site's Cray MPICH or MPICH
is used, never PyPI's ``mpich`` wheel.
"""

from spack.package import *  # Spack < 1.0 also exports PythonPackage here

try:  # Spack >= 1.0: build systems live in the builtin repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:
    pass


class PyWarpstore(PythonPackage):
    """Move data between the tasks of distributed, HPC and federated Python
    applications by reference: proxies that resolve just in time from per-node
    storage servers (ZeroMQ, UCX, Margo), DAOS, Redis or a file system."""

    homepage = "https://github.com/warpstore/warpstore"
    git = "https://github.com/warpstore/warpstore.git"

    license("MIT")

    version("main", branch="main")
    version("0.1.0", tag="v0.1.0")

    variant("numpy", default=True, description="Zero-copy numpy arrays")
    variant("mpi", default=True, description="MPI launcher (mpi4py on the site's MPI)")
    variant("zmq", default=True, description="Node servers over ZeroMQ")
    variant("ucx", default=False, description="Node servers over UCX (ucxx)")
    variant("margo", default=False, description="Node servers over Mochi Margo (RDMA)")
    variant("daos", default=False, description="DAOS connector (pydaos)")
    variant("redis", default=False, description="Redis connector")
    variant("globus", default=False, description="Globus transfer connector")
    variant("endpoints", default=False, description="Peer-to-peer endpoints and their relay")

    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-hatchling@1.18:", type="build")

    depends_on("py-click@8.1:", type=("build", "run"))
    depends_on("py-cloudpickle@2.0:", type=("build", "run"))
    depends_on("py-jinja2@3.1:", type=("build", "run"))
    depends_on("py-pyyaml@6.0:", type=("build", "run"))
    depends_on("py-lazy-object-proxy@1.10:", type=("build", "run"))
    depends_on("py-typing-extensions@4.5:", type=("build", "run"))
    depends_on("py-cryptography@41:", type=("build", "run"))

    with when("+numpy"):
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+mpi"):
        depends_on("mpi")
        depends_on("py-mpi4py@3.1:", type=("build", "run"))
    with when("+zmq"):
        depends_on("py-pyzmq@25:", type=("build", "run"))
    with when("+ucx"):
        depends_on("py-ucxx@0.44:", type=("build", "run"))
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+margo"):
        depends_on("py-mochi-margo", type=("build", "run"))
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+daos"):
        depends_on("daos", type=("build", "link", "run"))
    with when("+redis"):
        depends_on("py-redis@4.5:", type=("build", "run"))
    with when("+globus"):
        depends_on("py-globus-sdk@3:", type=("build", "run"))
    with when("+endpoints"):
        depends_on("py-aiortc@1.5:", type=("build", "run"))
        depends_on("py-websockets@13:", type=("build", "run"))

    depends_on("py-pytest@7.4:", type="test")

    @run_after("install")
    @on_package_attributes(run_tests=True)
    def check_templates(self):
        # the wheel must carry the job templates and site configs
        python("-c", "from warpstore.hpc.siteconfig import list_sites; assert list_sites()")
