"""Site configs, job-script rendering, environment detection, scheduler commands."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from warpstore.cli import cli
from warpstore.hpc.environment import detect_environment, expand_hostlist, local_rank_info
from warpstore.hpc.render import render_job_script
from warpstore.hpc.scheduler import SchedulerError, job_state, submit
from warpstore.hpc.siteconfig import SiteConfigError, list_sites, load_site
from warpstore.hpc.walltime import format_walltime, parse_walltime

SITES = ["aurora", "frontier", "generic-pbs", "generic-slurm", "local", "perlmutter", "polaris"]


def directives(script: str, prefix: str) -> list[list[str]]:
    """The scheduler directives the way the scheduler reads them: before the first command."""
    out = []
    for line in script.splitlines()[1:]:
        s = line.strip()
        if s.startswith(prefix):
            out.append(shlex.split(s[len(prefix) :]))
        elif s and not s.startswith("#"):
            break
    return out


def pbs_resources(script: str) -> dict[str, str]:
    res = {}
    for d in directives(script, "#PBS"):
        if d[0] == "-l":
            for part in d[1].split(","):
                k, _, v = part.partition("=")
                res[k] = v
    return res


def pbs_options(script: str) -> dict[str, str]:
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives(script, "#PBS") if d[0] != "-l"}


def sbatch_options(script: str) -> dict[str, str]:
    out = {}
    for d in directives(script, "#SBATCH"):
        k, _, v = d[0].partition("=")
        out[k] = v
    return out


def render(site: str, *extra: str, command: tuple[str, ...] = ("python", "wf.py")) -> str:
    result = CliRunner().invoke(cli, ["render", "--site", site, *extra, "--", *command])
    assert result.exit_code == 0, result.output
    return result.output


# -- site configs ----------------------------------------------------------------------


def test_every_shipped_site_loads_and_is_listed() -> None:
    assert list_sites() == SITES
    for name in SITES:
        cfg = load_site(name)
        assert cfg.name == name
        assert "{nodes}" in cfg["launcher"]["servers"]
    out = CliRunner().invoke(cli, ["site", "list"]).output
    for name in SITES:
        assert name in out


def test_site_show_prints_yaml_with_overrides() -> None:
    result = CliRunner().invoke(
        cli, ["site", "show", "polaris", "--set", "queue=prod", "--set", "connector.port=7000"]
    )
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["queue"] == "prod"
    assert data["connector"]["port"] == 7000
    assert data["filesystems"] == "home:eagle"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mysite.yaml"
    path.write_text(text)
    return path


BASE = "name: mine\nscheduler: slurm\nlauncher:\n  servers: srun -N {nodes}\n"


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "acount: abc\n")
    with pytest.raises(SiteConfigError) as e:
        load_site(path)
    msg = str(e.value)
    assert str(path) in msg and "'acount'" in msg and "account" in msg


def test_nested_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "connector:\n  type: zmq\n  prot: 5\n")
    with pytest.raises(SiteConfigError, match=r"connector\.prot"):
        load_site(path)


def test_ucx_settings_must_be_ucx_variables(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "connector:\n  ucx:\n    TLS: tcp\n")
    with pytest.raises(SiteConfigError, match=r"connector\.ucx\.TLS"):
        load_site(path)


def test_routing_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"connector\.routing\.large"):
        load_site(write(tmp_path, BASE + "connector:\n  routing:\n    large: tape\n"))
    with pytest.raises(SiteConfigError, match=r"connector\.routing\.nod"):
        load_site(write(tmp_path, BASE + "connector:\n  routing:\n    nod: zmq\n"))


def test_routing_config_for_a_launched_job(tmp_path: Path) -> None:
    from warpstore.connectors.multi import MultiConnector
    from warpstore.hpc.connectors import routing_config

    site = load_site(
        "local",
        ["connector.routing.large_threshold=1MiB", "connector.routing.remote_endpoints=[u-1]"],
    )
    node = {"port": None, "interface": None, "token_file": None, "timeout": 5.0,
            "memory_limit": None, "runtime_dir": str(tmp_path), "spawn": False}
    config = routing_config(site, "zmq", node, str(tmp_path))
    assert set(config) == {"node", "file", "remote"}
    assert config["file"]["config"]["store_dir"] == str(tmp_path / "objects")
    multi = MultiConnector.from_config({k: v for k, v in config.items() if k != "remote"})
    assert multi.choose(1 << 20) == "node" and multi.choose((1 << 20) + 1) == "file"
    assert config["remote"]["policy"]["superset_tags"] == ["remote"]
    multi.close()


def test_wrong_type_names_key_and_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "nodes: four\n")
    with pytest.raises(SiteConfigError) as e:
        load_site(path)
    assert "'nodes'" in str(e.value) and "int" in str(e.value) and "four" in str(e.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90 * 60), (90, 90 * 60), ("30:00", 30 * 60), ("01:30:00", 5400),
        ("48:00:00", 48 * 3600), ("1-00:00:00", 86400), ("1-12", 36 * 3600),
        ("2-01:30", (49 * 60 + 30) * 60), ("90m", 5400), ("1h30m", 5400), ("2h", 7200),
        ("1d12h", 36 * 3600), ("45s", 45), ("1:00", 60),
    ],
)  # fmt: skip
def test_walltime_in_every_form(text: str | int, seconds: int) -> None:
    assert parse_walltime(text) == seconds


def test_walltime_rendered_in_each_schedulers_format() -> None:
    assert format_walltime(5400, "pbs") == "01:30:00"
    assert format_walltime(36 * 3600, "pbs") == "36:00:00"  # PBS: hours unbounded
    assert format_walltime(36 * 3600, "slurm") == "1-12:00:00"
    assert format_walltime(5400, "slurm") == "01:30:00"
    one_day = sbatch_options(render("generic-slurm", "--walltime", "1-00:00:00"))
    assert one_day["--time"] == "1-00:00:00"
    assert pbs_resources(render("generic-pbs", "--walltime", "1h30m"))["walltime"] == "01:30:00"
    assert sbatch_options(render("generic-slurm", "--walltime", "90"))["--time"] == "01:30:00"


@pytest.mark.parametrize("walltime", ["01:60:00", "1:61", "abc", "0", "1-25:00:00", "1h70x"])
def test_bad_walltime_in_a_site_file_names_the_file(tmp_path: Path, walltime: str) -> None:
    path = write(tmp_path, BASE + f"walltime: '{walltime}'\n")
    with pytest.raises(SiteConfigError) as e:
        load_site(path)
    assert str(path) in str(e.value) and "'walltime'" in str(e.value)
    assert "not a walltime" in str(e.value)


def test_walltime_over_24_hours_is_fine(tmp_path: Path) -> None:
    assert load_site(write(tmp_path, BASE + "walltime: '48:00:00'\n"))["walltime"] == "48:00:00"
    assert load_site(write(tmp_path, BASE + "walltime: 90\n"))["walltime"] == "01:30:00"


def test_bad_walltime_on_the_command_line_blames_the_option() -> None:
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "--walltime", "1:61", "--", "true"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("warpstore: --walltime: '1:61' is not a walltime")
    assert "generic-slurm.yaml" not in result.output  # the value came from the command line
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "--set", "walltime=soon", "--", "true"]
    )
    assert result.exit_code == 1 and "--set walltime: 'soon'" in result.output


def test_missing_required_key_and_bad_scheduler(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="launcher"):
        load_site(write(tmp_path, "name: x\nscheduler: slurm\n"))
    with pytest.raises(SiteConfigError, match="pbs, slurm or none"):
        load_site(write(tmp_path, BASE.replace("slurm", "lsf")))


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="not valid YAML"):
        load_site(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(SiteConfigError, match="mapping"):
        load_site(write(tmp_path, "- a\n- b\n"))


def test_unknown_site_lists_the_known_ones() -> None:
    with pytest.raises(SiteConfigError) as e:
        load_site("polaaris")
    assert "polaaris" in str(e.value) and "polaris" in str(e.value)
    result = CliRunner().invoke(cli, ["render", "--site", "polaaris", "--", "true"])
    assert result.exit_code == 1 and "unknown site 'polaaris'" in result.output


def test_bad_override_syntax() -> None:
    with pytest.raises(SiteConfigError, match="key=value"):
        load_site("local", ["queue"])
    with pytest.raises(SiteConfigError, match="unknown key"):
        load_site("local", ["colour=blue"])


def test_user_file_overrides_everything(tmp_path: Path) -> None:
    cfg = load_site("polaris")
    data = dict(cfg.data)
    data.update(name="mypolaris", queue="prod", filesystems="home:grand", account="P1")
    path = write(tmp_path, yaml.safe_dump(data))
    refused = CliRunner().invoke(cli, ["render", "--site", str(path), "--nodes", "2", "--", "x"])
    assert refused.exit_code == 1  # the file's queue is checked too, and the file is named
    assert f"{path}: key 'queue': queue 'prod' does not take 2 nodes" in refused.output
    script = render(str(path), "--nodes", "12")
    assert pbs_options(script)["-q"] == "prod"
    assert pbs_resources(script)["filesystems"] == "home:grand"
    assert f"--site {path}" in script


# -- rendering -----------------------------------------------------------------------


def test_polaris_script_has_what_alcf_requires(running_venv: Path) -> None:
    """https://docs.alcf.anl.gov/polaris/running-jobs/: -A, select with system=polaris,
    place=scatter, walltime, filesystems, -k doe; queues by size; PALS's VNI flags."""
    script = render(
        "polaris", "--nodes", "4", "--walltime", "01:00:00", "--account", "A", "--queue",
        "debug-scaling",
    )  # fmt: skip
    opts, res = pbs_options(script), pbs_resources(script)
    assert opts["-A"] == "A" and opts["-q"] == "debug-scaling"
    assert res["select"] == "4:system=polaris:ngpus=4"
    assert res["place"] == "scatter"
    assert res["walltime"] == "01:00:00"
    assert res["filesystems"] == "home:eagle"
    assert opts["-k"] == "doe"
    assert "export TMPDIR=/tmp" in script  # AF_UNIX path too long otherwise
    assert "export PALS_LOCAL_LAUNCH=0" in script
    body = script.splitlines()
    assert body.index("module use /soft/modulefiles") < body.index("module load conda")
    assert body.index("conda activate base") < body.index(
        f"source {running_venv / 'bin' / 'activate'}"
    )  # the user's env after the site's modules
    assert "--single-node-vni" in script and "--cpu-bind none" in script
    python = running_venv / "bin" / "python"
    assert f"exec {python} -m warpstore launch --site polaris -- python wf.py" in script
    servers = load_site("polaris")["launcher"]
    assert "--single-node-vni" in servers["servers"] and "--single-node-vni" in servers["app"]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize(
    ("nodes", "walltime", "queue"),
    [
        ("1", "30m", "debug"), ("2", "1h", "debug"), ("4", "1h", "debug-scaling"),
        ("3", "12h", "capacity"), ("10", "3h", "prod"), ("30", "6h", "prod"),
        ("200", "24h", "prod"),
    ],
)  # fmt: skip
def test_polaris_queue_is_picked_from_nodes_and_walltime(
    nodes: str, walltime: str, queue: str
) -> None:
    script = render("polaris", "-A", "P", "--nodes", nodes, "--walltime", walltime)
    assert pbs_options(script)["-q"] == queue
    assert f"queue {queue} picked" in script


def test_polaris_misfit_queue_is_refused_naming_the_queues_that_fit() -> None:
    result = CliRunner().invoke(
        cli, ["render", "--site", "polaris", "-A", "P", "--nodes", "4", "--queue", "debug",
              "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "--queue: queue 'debug' does not take 4 nodes for 01:00:00" in result.output
    assert "queues that fit: debug-scaling, capacity, preemptable, demand" in result.output
    result = CliRunner().invoke(
        cli, ["render", "--site", "polaris", "-A", "P", "--nodes", "20", "--walltime", "4h",
              "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and "no queue of site 'polaris' takes 20 nodes" in result.output
    assert "03:00:00 for 10-24" in result.output  # prod's limit for that size
    # preemptable is never picked silently, but offered
    result = CliRunner().invoke(
        cli, ["render", "--site", "polaris", "-A", "P", "--nodes", "8", "--walltime", "10h",
              "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and "preemptable, give --queue" in result.output
    assert pbs_options(render("polaris", "-A", "P", "--queue", "preemptable"))["-q"] == (
        "preemptable"
    )


def test_polaris_without_account_is_refused() -> None:
    result = CliRunner().invoke(cli, ["render", "--site", "polaris", "--", "true"])
    assert result.exit_code == 1 and "account" in result.output and "ALCF project" in result.output


def test_aurora_script_has_what_alcf_requires() -> None:
    """https://docs.alcf.anl.gov/aurora/running-jobs-aurora/ and the DAOS page:
    filesystems=flare:daos_user_fs (no daos resource), module use before module load daos,
    -k doe, one VNI mode (--no-vni, required for DAOS), the 6-rank binding."""
    script = render("aurora", "-A", "P", "--nodes", "2")
    opts, res = pbs_options(script), pbs_resources(script)
    assert res["filesystems"] == "flare:daos_user_fs"
    assert "daos" not in res and "-l daos" not in script
    assert res["select"] == "2" and res["place"] == "scatter" and opts["-k"] == "doe"
    assert opts["-q"] == "debug"
    body = script.splitlines()
    assert body.index("module use /soft/modulefiles") < body.index("module load daos")
    assert "--no-vni" in script and "--single-node-vni" not in script
    assert "PALS_LOCAL_LAUNCH" not in script
    launcher = load_site("aurora")["launcher"]
    assert "--no-vni" in launcher["servers"] and "--no-vni" in launcher["app"]
    assert "--cpu-bind list:1-16:17-32:33-48:53-68:69-84:85-100" in launcher["app"]
    assert "--gpu-bind" in launcher["app"] and "--ppn 6" in launcher["app"]
    assert load_site("aurora")["connector"]["type"] != "daos"  # works without a pool
    assert pbs_options(render("aurora", "-A", "P", "--nodes", "8"))["-q"] == "debug-scaling"
    assert pbs_options(render("aurora", "-A", "P", "--nodes", "64", "--walltime", "5h"))[
        "-q"
    ] == "prod"


def test_aurora_daos_and_account_fail_at_render_not_at_job_start() -> None:
    result = CliRunner().invoke(cli, ["render", "--site", "aurora", "--", "x"])
    assert result.exit_code == 1 and "Aurora allocation" in result.output
    assert "eagle" not in result.output  # Polaris's file systems are no hint for Aurora
    result = CliRunner().invoke(
        cli, ["render", "--site", "aurora", "-A", "P", "--connector", "daos", "--", "x"]
    )
    assert result.exit_code == 1 and "pool and a container" in result.output
    result = CliRunner().invoke(
        cli, ["render", "--site", "aurora", "-A", "P", "--connector", "daos",
              "--set", "connector.daos.pool=p", "--set", "connector.daos.container=c",
              "--set", "filesystems=flare", "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and "daos_user_fs" in result.output
    render("aurora", "-A", "P", "--connector", "daos", "--set", "connector.daos.pool=p",
           "--set", "connector.daos.container=c")  # fmt: skip


def test_perlmutter_script_has_what_nersc_requires() -> None:
    """https://docs.nersc.gov/jobs/: -C cpu|gpu, a QOS (NERSC's "queue"), the account;
    GPU nodes ask for their GPUs; Slingshot VNIs for cxi traffic."""
    script = render("perlmutter", "-A", "m1", "--nodes", "3")
    opts = sbatch_options(script)
    assert opts["--constraint"] == "cpu" and opts["--nodes"] == "3" and opts["--account"] == "m1"
    assert opts["--qos"] == "debug" and "--partition" not in opts
    assert "--ntasks-per-node" not in opts and "--gpus-per-node" not in opts
    assert opts["--signal"] == "B:TERM@120"
    assert "--network=job_vni,single_node_vni" in script  # the servers' step
    assert "--network" not in opts  # zmq needs no cxi
    assert sbatch_options(render("perlmutter", "-A", "m1", "--nodes", "20", "--walltime", "6h"))[
        "--qos"
    ] == "regular"
    assert sbatch_options(render("perlmutter", "-A", "m1", "--queue", "premium"))["--qos"] == (
        "premium"
    )
    gpu = sbatch_options(render("perlmutter", "-A", "m1_g", "--set", "constraint=gpu"))
    assert gpu["--constraint"] == "gpu" and gpu["--gpus-per-node"] == "4"
    margo = sbatch_options(render("perlmutter", "-A", "m1", "--connector", "margo"))
    assert margo["--network"] == "job_vni,single_node_vni"
    launcher = load_site("perlmutter")["launcher"]
    assert "--network=job_vni,single_node_vni" in launcher["app"]


# The edges of the OLCF Frontier guide's "Job Priority by Node Count" bins and of the
# extended partition (checked against the guide's source: see site-configs/frontier.yaml).
FRONTIER_EDGES = [
    ("91", "02:00:00", "batch"), ("91", "02:01:00", None),
    ("92", "06:00:00", "batch"), ("183", "06:01:00", None),
    ("184", "12:00:00", "batch"), ("5645", "12:00:00", "batch"), ("9472", "12:00:00", "batch"),
    ("9473", "01:00:00", None), ("1", "12:01:00", "extended"),
    ("64", "24:00:00", "extended"), ("65", "24:00:00", None), ("64", "24:01:00", None),
]


@pytest.mark.parametrize(("nodes", "walltime", "partition"), FRONTIER_EDGES)
def test_frontier_partitions_follow_the_olcf_bins(
    nodes: str, walltime: str, partition: str | None
) -> None:
    args = ["render", "--site", "frontier", "-A", "a", "--nodes", nodes, "--walltime", walltime]
    result = CliRunner().invoke(cli, [*args, "--", "x"])
    if partition is None:
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert f"takes {nodes} nodes for {walltime}" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert sbatch_options(result.output)["--partition"] == partition


def test_frontier_script_has_what_olcf_requires() -> None:
    """https://docs.olcf.ornl.gov/systems/frontier_user_guide.html: -A, -p batch with its
    walltime bins, -C nvme; a file store other nodes can read."""
    script = render("frontier", "-A", "abc123", "--nodes", "8")
    opts = sbatch_options(script)
    assert opts["--partition"] == "batch" and opts["--constraint"] == "nvme"
    assert opts["--account"] == "abc123" and "--ntasks-per-node" not in opts
    assert load_site("frontier")["local_scratch"] == "/mnt/bb/$USER"
    assert "store_dir" not in load_site("frontier")["connector"].get("file", {})
    result = CliRunner().invoke(
        cli, ["render", "--site", "frontier", "-A", "a", "--nodes", "100", "--walltime", "8h",
              "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and "06:00:00 for 92-183" in result.output
    assert sbatch_options(render("frontier", "-A", "a", "--walltime", "20h"))["--partition"] == (
        "extended"
    )
    result = CliRunner().invoke(
        cli, ["render", "--site", "frontier", "-A", "a", "--nodes", "2", "--connector", "file",
              "--set", "connector.file.store_dir=/mnt/bb/$USER/objects", "--", "x"],
    )  # fmt: skip
    assert result.exit_code == 1 and "node-local" in result.output


def test_generic_sites_ask_for_whole_nodes() -> None:
    slurm = sbatch_options(render("generic-slurm", "--nodes", "2"))
    assert "--exclusive" in slurm and "--ntasks-per-node" not in slurm
    assert slurm["--time"] == "01:00:00" and slurm["--signal"] == "B:TERM@120"
    pbs = pbs_resources(render("generic-pbs", "--nodes", "2"))
    assert pbs["place"] == "scatter:excl" and pbs["select"] == "2"


def test_resources_dependencies_and_mail() -> None:
    script = render(
        "generic-slurm", "--set", "gpus_per_node=2", "--set", "memory_per_node=64GiB",
        "--dependency", "1234", "--mail-user", "me@example.org", "--mail-type", "end,fail",
    )  # fmt: skip
    opts = sbatch_options(script)
    assert opts["--gpus-per-node"] == "2" and opts["--mem"] == "65536M"
    assert opts["--dependency"] == "afterok:1234"
    assert opts["--mail-user"] == "me@example.org" and opts["--mail-type"] == "END,FAIL"
    script = render(
        "generic-pbs", "--set", "gpus_per_node=2", "--set", "memory_per_node=64GiB",
        "--dependency", "afterany:12.server:13.server", "--mail-user", "me@example.org",
        "--mail-type", "BEGIN,END,FAIL",
    )  # fmt: skip
    opts, res = pbs_options(script), pbs_resources(script)
    assert res["select"] == "1:ngpus=2:mem=65536mb"
    assert opts["-W"] == "depend=afterany:12.server:13.server"
    assert opts["-M"] == "me@example.org" and opts["-m"] == "abe"
    for bad in (["--dependency", "before:1"], ["--mail-type", "sometimes"]):
        result = CliRunner().invoke(cli, ["render", "--site", "generic-slurm", *bad, "--", "x"])
        assert result.exit_code == 1 and bad[0] in result.output


def test_pbs_early_signal_is_armed_in_the_script() -> None:
    script = render("generic-pbs", "--walltime", "10m")
    assert "timeout 480 tail -s 0.2 --pid=$$ -f /dev/null; then kill -TERM $$" in script
    assert script.rstrip().splitlines()[-1].startswith("exec ")
    none = render("generic-pbs", "--set", "early_signal=0")
    assert "kill -TERM" not in none


@pytest.mark.parametrize("site", [s for s in SITES if s != "local"])
def test_every_site_renders_valid_bash(site: str) -> None:
    script = render(site, "-A", "P", "--connector", "zmq")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert script.startswith("#!/bin/bash")
    assert f"{sys.executable} -m warpstore launch --site {site}" in script


def test_directives_can_be_replaced_skipped_and_added() -> None:
    script = render(
        "generic-pbs",
        "--directive", "place=-l place=pack",
        "--directive", "join=",
        "--directive", "-r y",
        "--set", "scheduler_options=['-m abe', '-l storage=gpfs']",
    )  # fmt: skip
    res, opts = pbs_resources(script), pbs_options(script)
    assert res["place"] == "pack"
    assert "-j" not in opts
    assert opts["-m"] == "abe" and res["storage"] == "gpfs"
    assert opts["-r"] == "y"
    slurm = sbatch_options(render("generic-slurm", "--directive", "--gres=gpu:2"))
    assert slurm["--gres"] == "gpu:2"


def test_unknown_directive_name_is_refused_not_ignored() -> None:
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "--directive", "gres=gpu:2", "--", "x"]
    )
    assert result.exit_code == 1
    assert "no built-in directive 'gres'" in result.output and "--gres=gpu:2" in result.output


def test_local_site_has_no_script() -> None:
    result = CliRunner().invoke(cli, ["render", "--site", "local", "--", "true"])
    assert result.exit_code == 1 and "warpstore launch --site local" in result.output


def test_render_to_file_and_unknown_connector(tmp_path: Path) -> None:
    out = tmp_path / "job.sh"
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "-o", str(out), "--", "python", "a b.py"]
    )
    assert result.exit_code == 0, result.output
    assert os.access(out, os.X_OK)
    assert "-- python 'a b.py'" in out.read_text()
    assert "launch --site generic-slurm" in out.read_text()
    with pytest.raises(SiteConfigError, match="unknown connector"):
        render_job_script(load_site("generic-slurm"), ["true"], connector="ftp")


# -- environment detection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("nid001", ["nid001"]),
        ("nid[001-004,007]", ["nid001", "nid002", "nid003", "nid004", "nid007"]),
        ("n[1-2],login1", ["n1", "n2", "login1"]),
        ("x[8-11]", ["x8", "x9", "x10", "x11"]),
        ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
        ("a[09-10]b", ["a09b", "a10b"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["nid[1-", "nid]1[", "nid[4-2]", "nid[a-b]"])
def test_bad_hostlist(bad: str) -> None:
    with pytest.raises(ValueError, match=r"hostlist|range"):
        expand_hostlist(bad)


def test_detect_pbs(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001\nx3001\nx3002\nx3002\n")  # one line per rank slot
    env = detect_environment({"PBS_JOBID": "123.polaris-pbs-01", "PBS_NODEFILE": str(nodefile)})
    assert env.scheduler == "pbs" and env.job_id == "123.polaris-pbs-01"
    assert env.nodes == ["x3001", "x3002"]


def test_detect_slurm_and_none() -> None:
    env = detect_environment({"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "nid[001-003]"})
    assert (env.scheduler, env.job_id, env.num_nodes) == ("slurm", "77", 3)
    assert detect_environment({}).scheduler == "none"


def test_local_rank_info() -> None:
    assert local_rank_info({"MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "4"}) == (2, 4)
    assert local_rank_info({"PALS_LOCAL_RANKID": "0", "PALS_LOCAL_SIZE": "8"}) == (0, 8)
    assert local_rank_info({}) == (None, None)
    sim = {"WARPSTORE_SIMULATE_NODES": "2", "PMI_RANK": "3", "PMI_SIZE": "5"}
    assert local_rank_info(sim) == (1, 2)
    assert local_rank_info({**sim, "PMI_RANK": "4"}) == (0, 1)


# -- scheduler commands --------------------------------------------------------------


def test_missing_scheduler_command_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SchedulerError, match="`qsub` is not on PATH"):
        submit("pbs", "job.pbs")
    with pytest.raises(SchedulerError, match=r"`squeue` is not on PATH"):
        job_state("slurm", "1")
    result = CliRunner().invoke(
        cli, ["submit", "--site", "generic-pbs", "-o", str(tmp_path / "job.pbs"), "--", "true"]
    )
    assert result.exit_code == 1 and "`qsub` is not on PATH" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["status", "12"])  # a Slurm id: squeue, not "any"
    assert result.exit_code == 1 and "`squeue` is not on PATH" in result.output
    result = CliRunner().invoke(cli, ["status", "12.polaris-pbs-01"])
    assert result.exit_code == 1 and "`qstat` is not on PATH" in result.output


def fake_command(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def test_job_ids_are_read_robustly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    fake_command(tmp_path, "sbatch", 'echo "4242;perlmutter"')
    assert submit("slurm", "job.sh") == "4242"
    fake_command(tmp_path, "qsub", "echo 9876.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")
    assert submit("pbs", "job.pbs") == "9876.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"
    fake_command(tmp_path, "qsub", "echo 'qsub: Unknown queue' >&2; exit 1")
    with pytest.raises(SchedulerError, match="Unknown queue"):
        submit("pbs", "job.pbs")
    fake_command(tmp_path, "sbatch", "echo 'Submitted batch job 5'")  # no --parsable support
    with pytest.raises(SchedulerError, match="cannot read a Slurm job id"):
        submit("slurm", "job.sh")


# -- the job's Python environment ----------------------------------------------------


def make_venv(path: Path) -> Path:
    """A venv-shaped directory (bin/activate, bin/python) without running venv: fast."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "activate").write_text("# activate\n")
    # A wrapper, not a symlink: a link to a venv's python found outside that
    # venv would start the base interpreter, which may not have warpstore.
    python = path / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return path


@pytest.fixture
def running_venv(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make this process look as if it ran from a venv, as `warpstore render` usually does.

    The tests themselves may run from a venv or from the system's Python (CI installs
    into that); what render records must not depend on which.
    """
    venv = make_venv(Path.home() / f".wstest-venv-{os.getpid()}")
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    try:
        yield venv
    finally:
        shutil.rmtree(venv)


def test_render_records_the_running_venv(running_venv: Path) -> None:
    script = render("generic-slurm")
    assert f"# Python environment: venv {running_venv}" in script
    assert f"source {running_venv / 'bin' / 'activate'}" in script
    assert f"exec {running_venv / 'bin' / 'python'} -m warpstore launch" in script


def test_render_records_a_plain_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system's Python (no venv, no conda): called by its absolute path, nothing sourced."""
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", "/opt/python/bin/python3")
    script = render("generic-slurm")
    assert "# Python environment: interpreter /opt/python/bin/python3" in script
    assert "source " not in script and "conda activate" not in script
    assert "exec /opt/python/bin/python3 -m warpstore launch" in script


def test_python_env_option_and_site_key(tmp_path: Path) -> None:
    from warpstore.hpc.pyenv import resolve_python_env

    venv = make_venv(Path.home() / f".wstest-venv-{os.getpid()}")
    try:
        script = render("generic-slurm", "--python-env", str(venv))
        assert f"source {venv}/bin/activate" in script
        assert f"exec {venv}/bin/python -m warpstore launch" in script
        assert "warning" not in script
        by_key = render("generic-slurm", "--set", f"python_env={venv}")
        assert f"exec {venv}/bin/python -m warpstore" in by_key
    finally:
        shutil.rmtree(venv)
    none = render("generic-slurm", "--python-env", "none")
    assert "source " not in none and "exec python3 -m warpstore launch" in none
    conda = render("generic-slurm", "--python-env", "conda:myenv")
    assert "conda activate myenv" in conda and "exec python -m warpstore launch" in conda
    # an env under /tmp: compute nodes usually cannot see it
    tmp_env = resolve_python_env(str(make_venv(tmp_path / "v")), check=False)
    assert tmp_env.warnings and "/tmp" in tmp_env.warnings[0]


def test_bad_python_env_fails_at_render(tmp_path: Path) -> None:
    for spec, words in [
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path), "is not a virtual environment"),
    ]:
        result = CliRunner().invoke(
            cli, ["render", "--site", "generic-slurm", "--python-env", spec, "--", "x"]
        )
        assert result.exit_code == 1 and words in result.output, result.output
        assert result.output.startswith("warpstore: --python-env:")
    # a real venv without warpstore in it: the job would die with "No module named warpstore"
    bare = tmp_path / "bare"
    subprocess.run(
        [sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True
    )
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "--python-env", str(bare), "--", "x"]
    )
    assert result.exit_code == 1 and "warpstore is not installed in" in result.output


# -- scheduler of a job, local site --------------------------------------------------


def test_status_picks_the_scheduler_from_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warpstore.hpc.scheduler import record_job, scheduler_for_job

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert scheduler_for_job("123.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov") == "pbs"
    assert scheduler_for_job("4242") == "slurm" and scheduler_for_job("4242_7") == "slurm"
    record_job("77", "pbs", "polaris", "/x/job.pbs")  # a PBS server that numbers only
    assert scheduler_for_job("77") == "pbs"
    with pytest.raises(SchedulerError, match="--scheduler"):
        scheduler_for_job("job-x")


def test_local_site_is_one_node() -> None:
    with pytest.raises(SiteConfigError, match="one node"):
        load_site("local", values={"nodes": 2})
    result = CliRunner().invoke(cli, ["launch", "--site", "local", "--set", "nodes=2", "--", "x"])
    assert result.exit_code == 1 and "--set nodes" in result.output and "one node" in result.output


def test_queue_tables_are_validated(tmp_path: Path) -> None:
    bad = BASE + "queues:\n  q:\n    nodes: [4, 2]\n    walltime: 1h\n"
    with pytest.raises(SiteConfigError, match=r"queues\.q\.nodes"):
        load_site(write(tmp_path, bad))
    bad = BASE + "queues:\n  q:\n    nodes: [1, 2]\n    walltime: forever\n"
    with pytest.raises(SiteConfigError, match=r"queues\.q\.walltime"):
        load_site(write(tmp_path, bad))


def test_site_queues_lists_the_table_and_short_walltimes_are_refused() -> None:
    out = CliRunner().invoke(cli, ["site", "queues", "polaris"]).output
    lines = out.splitlines()
    assert lines[0] == "# https://docs.alcf.anl.gov/polaris/running-jobs/"
    assert any(line.startswith("* debug ") and "1-2" in line for line in lines)
    assert any(line.startswith("  preemptable") for line in lines)  # never picked by default
    assert "03:00:00 (10-24)" in out
    result = CliRunner().invoke(
        cli, ["render", "--site", "polaris", "-A", "P", "--walltime", "2m", "--", "x"]
    )
    assert result.exit_code == 1
    assert "--walltime: 00:02:00 is shorter than site 'polaris' accepts (00:05:00)" in result.output


def test_launch_refuses_a_node_count_below_one() -> None:
    """As render does: one line naming the option, before anything starts."""
    for bad in ("0", "-2"):
        args = ["launch", "--site", "local", "--nodes", bad, "--", "true"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("warpstore: ") and line.endswith(
            f"--nodes: must be at least 1, got {bad}"
        )
