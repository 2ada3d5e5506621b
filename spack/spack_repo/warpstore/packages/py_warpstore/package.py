# Copyright warpstore developers. SPDX-License-Identifier: MIT

from spack_repo.builtin.build_systems.python import PythonPackage

from spack.package import *


class PyWarpstore(PythonPackage):
    """Move data between the tasks of distributed, HPC and federated Python
    applications by reference: proxies that resolve just in time from per-node
    storage servers (ZeroMQ, UCX, Margo), DAOS, Redis or a file system.

    Variants map one to one onto the Python extras in pyproject.toml (tests keep
    the two in agreement), plus the transports that only Spack provides
    (``+margo``: Mochi Margo over Mercury/libfabric, from Mochi's repository;
    ``+daos``: pydaos, shipped with a site's DAOS). MPI is Spack's virtual
    ``mpi``, so a site's Cray MPICH or MPICH is used, never PyPI's ``mpich`` wheel.
    """

    homepage = "https://github.com/warpstore/warpstore"
    git = "https://github.com/warpstore/warpstore.git"

    license("MIT")

    # No release is published yet: `develop` builds the main branch, and the site
    # environments under spack/environments build the user's checkout (`develop:`).
    # A release adds `pypi = "warpstore/warpstore-X.Y.Z.tar.gz"` and
    # `version("X.Y.Z", sha256=...)` from `spack checksum py-warpstore X.Y.Z`.
    version("develop", branch="main")

    variant("numpy", default=True, description="Zero-copy numpy arrays")
    variant("mpi", default=True, description="MPI launcher (mpi4py on the site's MPI)")
    variant("zmq", default=True, description="Node servers over ZeroMQ")
    variant("ucx", default=False, description="Node servers over UCX (ucxx)")
    variant("margo", default=False, description="Node servers over Mochi Margo (RDMA)")
    variant("daos", default=False, description="DAOS connector (pydaos)")
    variant("redis", default=False, description="Redis connector")
    variant("globus", default=False, description="Globus transfer connector")
    variant("endpoints", default=False, description="Peer-to-peer endpoints and their relay")
    variant("kafka", default=False, description="Streams through Kafka (kafka-python)")
    variant("dask", default=False, description="Dask distributed Client passing data by proxy")
    variant("parsl", default=False, description="Parsl serializer passing data by proxy")

    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-hatchling@1.18:", type="build")

    depends_on("py-click@8.1:", type=("build", "run"))
    depends_on("py-cloudpickle@2.0:", type=("build", "run"))
    depends_on("py-jinja2@3.1:", type=("build", "run"))
    depends_on("py-pyyaml@6.0:", type=("build", "run"))
    depends_on("py-typing-extensions@4.5:", type=("build", "run"))
    depends_on("py-cryptography@41:", type=("build", "run"))

    with when("+numpy"):
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+mpi"):
        # the launcher runs the site's mpiexec; nothing links MPI but mpi4py
        depends_on("mpi", type="run")
        depends_on("py-mpi4py@3.1:", type=("build", "run"))
    with when("+zmq"):
        depends_on("py-pyzmq@25:", type=("build", "run"))
    with when("+ucx"):
        # this repository's py-ucxx: RAPIDS' wheels, declared as an external (see its recipe)
        depends_on("py-ucxx@0.44:", type=("build", "run"))
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+margo"):
        # Mochi's repository (mochi-hpc/mochi-spack-packages) provides py-mochi-margo
        depends_on("py-mochi-margo", type=("build", "run"))
        depends_on("py-numpy@1.24:", type=("build", "run"))
    with when("+daos"):
        # this repository's py-pydaos: the site's DAOS client, declared as an external
        depends_on("py-pydaos", type=("build", "run"))
    with when("+redis"):
        depends_on("py-redis@4.5:", type=("build", "run"))
    with when("+globus"):
        depends_on("py-globus-sdk@3:", type=("build", "run"))
    with when("+endpoints"):
        # builtin has no aiortc: this repository carries it and its missing dependencies
        depends_on("py-aiortc@1.5:", type=("build", "run"))
        depends_on("py-websockets@13:", type=("build", "run"))
    with when("+kafka"):
        depends_on("py-kafka-python@2.0:", type=("build", "run"))
    with when("+dask"):
        depends_on("py-distributed@2023.1:", type=("build", "run"))
    with when("+parsl"):
        depends_on("py-parsl@2024.1:", type=("build", "run"))

    depends_on("py-pytest@7.4:", type="test")

    import_modules = ["warpstore", "warpstore.store", "warpstore.connectors"]

    @run_after("install")
    @on_package_attributes(run_tests=True)
    def check_templates(self):
        # the wheel must carry the job templates and site configs
        python("-c", "from warpstore.hpc.siteconfig import list_sites; assert list_sites()")
