"""Site configs, job-script rendering, environment detection, scheduler commands."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from warpstore.cli import cli
from warpstore.hpc.environment import detect_environment, expand_hostlist, local_rank_info
from warpstore.hpc.render import render_job_script
from warpstore.hpc.scheduler import SchedulerError, job_state, submit
from warpstore.hpc.siteconfig import SiteConfigError, list_sites, load_site

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


@pytest.mark.parametrize("walltime", ["1:00", "01:60:00", "1h", "00:30"])
def test_bad_walltime(tmp_path: Path, walltime: str) -> None:
    path = write(tmp_path, BASE + f"walltime: '{walltime}'\n")
    with pytest.raises(SiteConfigError) as e:
        load_site(path)
    assert str(path) in str(e.value) and "walltime" in str(e.value) and "HH:MM:SS" in str(e.value)


def test_walltime_over_24_hours_is_fine(tmp_path: Path) -> None:
    assert load_site(write(tmp_path, BASE + "walltime: '48:00:00'\n"))["walltime"] == "48:00:00"


def test_bad_walltime_on_the_command_line_is_a_clean_error() -> None:
    result = CliRunner().invoke(
        cli, ["render", "--site", "generic-slurm", "--walltime", "1:00", "--", "true"]
    )
    assert result.exit_code == 1
    assert "walltime" in result.output and "HH:MM:SS" in result.output
    assert "Traceback" not in result.output


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
    script = render(str(path), "--nodes", "2")
    assert pbs_options(script)["-q"] == "prod"
    assert pbs_resources(script)["filesystems"] == "home:grand"
    assert f"--site {path}" in script


# -- rendering -----------------------------------------------------------------------


def test_polaris_script_has_what_alcf_requires() -> None:
    script = render(
        "polaris", "--nodes", "4", "--walltime", "01:00:00", "--account", "A", "--queue", "debug"
    )
    opts, res = pbs_options(script), pbs_resources(script)
    assert opts["-A"] == "A" and opts["-q"] == "debug"
    assert res["select"] == "4:system=polaris"
    assert res["place"] == "scatter"
    assert res["walltime"] == "01:00:00"
    assert res["filesystems"] == "home:eagle"
    assert "export TMPDIR=/tmp" in script  # AF_UNIX path too long otherwise
    assert "module use /soft/modulefiles" in script
    assert "--single-node-vni" in script and "--cpu-bind none" in script
    assert "warpstore launch --site polaris -- python wf.py" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_polaris_without_account_is_refused() -> None:
    result = CliRunner().invoke(cli, ["render", "--site", "polaris", "--", "true"])
    assert result.exit_code == 1 and "account" in result.output


def test_aurora_filesystems_and_daos_are_configurable() -> None:
    script = render("aurora", "-A", "P", "--nodes", "2", "--connector", "zmq")
    assert pbs_resources(script)["filesystems"] == "flare:daos_user"
    assert pbs_resources(script)["daos"] == "default"
    assert "PALS_LOCAL_LAUNCH=0" in script
    changed = render(
        "aurora", "-A", "P", "--set", "filesystems=flare:home",
        "--set", "scheduler_options=['-l daos=daos_user']",
    )
    assert pbs_resources(changed)["filesystems"] == "flare:home"
    assert pbs_resources(changed)["daos"] == "daos_user"


def test_perlmutter_needs_constraint() -> None:
    script = render("perlmutter", "-A", "m1", "--nodes", "3")
    opts = sbatch_options(script)
    assert opts["--constraint"] == "cpu" and opts["--nodes"] == "3" and opts["--account"] == "m1"
    assert opts["--qos"] == "debug"
    assert "--network=job_vni,single_node_vni" in script
    gpu = sbatch_options(render("perlmutter", "-A", "m1_g", "--set", "constraint=gpu"))
    assert gpu["--constraint"] == "gpu"


def test_frontier_batch_partition_and_nvme() -> None:
    script = render("frontier", "-A", "abc123", "--nodes", "8")
    opts = sbatch_options(script)
    assert opts["--partition"] == "batch" and opts["--constraint"] == "nvme"
    assert load_site("frontier")["local_scratch"] == "/mnt/bb/$USER"


@pytest.mark.parametrize("site", [s for s in SITES if s != "local"])
def test_every_site_renders_valid_bash(site: str) -> None:
    script = render(site, "-A", "P", "--connector", "zmq")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert script.startswith("#!/bin/bash")
    assert "warpstore launch --site " + site in script


def test_directives_can_be_replaced_skipped_and_added() -> None:
    script = render(
        "generic-pbs",
        "--directive", "place=-l place=pack",
        "--directive", "join=",
        "--set", "scheduler_options=['-m abe', '-l storage=gpfs']",
    )
    res, opts = pbs_resources(script), pbs_options(script)
    assert res["place"] == "pack"
    assert "-j" not in opts
    assert opts["-m"] == "abe" and res["storage"] == "gpfs"


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
    result = CliRunner().invoke(cli, ["status", "12"])
    assert result.exit_code == 1 and "no scheduler commands" in result.output


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
