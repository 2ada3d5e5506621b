"""HPC support: scheduler environments, site configs, job templates, the MPI launcher."""
