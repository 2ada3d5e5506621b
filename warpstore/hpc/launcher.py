"""``warpstore launch``: servers on every node, the workflow, teardown and a report.

Run once per job, from the batch script. It starts one storage server per
node through the site's launcher line (``mpiexec``/``srun``, one rank per
node), waits for rank 0 to write the manifest, runs the user's command with
``WARPSTORE_MANIFEST`` set, and when that command ends (or the scheduler sends
SIGTERM near the walltime) stops every server, writes ``report.json`` next to
the manifest, prints a one-paragraph summary and exits with the command's
status.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from warpstore.hpc.connectors import NODE_SERVER_TRANSPORTS, node_server_settings
from warpstore.hpc.environment import detect_environment
from warpstore.hpc.manifest import read_manifest
from warpstore.hpc.siteconfig import SiteConfig
from warpstore.server.runtime import create_token_file, read_json, write_json_atomic
from warpstore.units import format_size

__all__ = ["LaunchError", "launch"]

logger = logging.getLogger("warpstore.launch")


class LaunchError(RuntimeError):
    """The servers could not be started; the message says on which node and why."""


def _job_dir(site: SiteConfig, job_id: str) -> Path:
    base = Path(os.path.expandvars(site.get("job_dir") or os.getcwd()))
    path = base / f"warpstore-{job_id}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _token_file(job_dir: Path) -> Path:
    path = job_dir / "token"
    if not path.exists():
        create_token_file(path)
    return path


def _job(site: SiteConfig) -> tuple[Any, str, Path]:
    """This job's scheduler environment, id (as the scheduler gave it) and directory."""
    env_info = detect_environment()
    job_id = env_info.job_id or f"local-{os.getpid()}-{int(time.time())}"
    return env_info, job_id, _job_dir(site, job_id.replace("/", "_"))


def _job_env(site: SiteConfig, job_id: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of everything the launcher starts: the site's, then the job's."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in site.get("environment", {}).items()})
    env.update({"WARPSTORE_JOB_ID": job_id.replace("/", "_"), "WARPSTORE_SITE": site.name})
    env.update(extra)
    return env


def _manifest_head(site: SiteConfig, env_info: Any, job_id: str, job_dir: Path) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "site": site.name,
        "scheduler": env_info.scheduler,
        "nodes": env_info.nodes if env_info.scheduler != "none" else [],
        "job_dir": str(job_dir),
    }


def _stop_servers(manifest: dict[str, Any], token_file: str, timeout: float = 10.0) -> None:
    from warpstore.server.clients import client_for, transport_of
    from warpstore.server.protocol import Op
    from warpstore.server.runtime import load_token

    token, _ = load_token(token_file=token_file)
    clients: dict[str, Any] = {}
    try:
        for server in manifest.get("servers", []):
            try:
                transport = transport_of(server["address"])
                if transport not in clients:
                    clients[transport] = client_for(transport, token, timeout)
                clients[transport].request(server["address"], Op.SHUTDOWN, timeout=timeout)
            except Exception as e:
                logger.warning(
                    "could not stop server %s of node %s: %s",
                    server["address"],
                    server.get("node"),
                    e,
                )
                _terminate_if_here(server)
    finally:
        for client in clients.values():
            client.close()


def _terminate_if_here(server: dict[str, Any]) -> None:
    """SIGTERM a server that did not answer SHUTDOWN, if it runs on this host.

    Servers on other hosts end with the job's allocation; one on the launcher's
    own host (the local site, a single-node job) must not outlive the launch.
    """
    import socket

    from warpstore.server.runtime import pid_alive

    pid = server.get("pid")
    if not pid or server.get("host") != socket.gethostname() or not pid_alive(int(pid)):
        return
    try:
        os.kill(int(pid), signal.SIGTERM)
        logger.warning("sent SIGTERM to server pid %s of node %s", pid, server.get("node"))
    except ProcessLookupError:
        pass


def _end_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _collect_report(
    job_dir: Path, runtime_dir: Path, manifest: dict[str, Any], rc: int, timings: dict[str, float]
) -> dict[str, Any]:
    nodes = []
    for path in sorted(runtime_dir.glob("*/nodes/*/*/report.json")):
        data = read_json(path) or {}
        final = data.get("final", {})
        nodes.append(
            {
                "node": data.get("node"),
                "address": data.get("address"),
                "objects_left": final.get("objects", 0),
                "bytes_left": final.get("bytes", 0),
                # same-node puts and gets go through shared memory (PUT_SHM, GET_SHM)
                "puts": sum(final.get("requests", {}).get(op, 0) for op in ("PUT", "PUT_SHM")),
                "gets": sum(final.get("requests", {}).get(op, 0) for op in ("GET", "GET_SHM")),
                "bytes_put": final.get("bytes_in", 0),
                "bytes_got": final.get("bytes_out", 0) + final.get("bytes_shared", 0),
                "bytes_shared": final.get("bytes_shared", 0),
                # node-local cache: fetched from other nodes vs served to this node's ranks
                "cache": final.get("cache", {}),
                "errors": final.get("errors", {}),
                "elastic": any(
                    s.get("elastic") and s["address"] == data.get("address")
                    for s in manifest.get("servers", [])
                ),
            }
        )
    report = {
        "job": manifest.get("job_id"),
        "site": manifest.get("site"),
        "exit_code": rc,
        "nodes": nodes,
        "timings_s": timings,
        "servers_expected": len(manifest.get("servers", [])),
        "servers_reported": len(nodes),
    }
    write_json_atomic(job_dir / "report.json", report)
    return report


def _summary(report: dict[str, Any], job_dir: Path) -> str:
    nodes = report["nodes"]
    puts = sum(n["puts"] for n in nodes)
    gets = sum(n["gets"] for n in nodes)
    put_bytes = sum(n["bytes_put"] for n in nodes)
    got_bytes = sum(n["bytes_got"] for n in nodes)
    errors = sum(sum(n["errors"].values()) for n in nodes)
    busiest = max(nodes, key=lambda n: n["bytes_put"] + n["bytes_got"], default=None)
    t = report["timings_s"]
    text = (
        f"warpstore: job {report['job']} on site {report['site']} ran {len(nodes)} "
        f"server(s) ({report['servers_expected']} in the manifest); the workflow exited "
        f"with {report['exit_code']}. Tasks put {puts} objects ({format_size(put_bytes)}) and "
        f"got {gets} ({format_size(got_bytes)}); {errors} server errors. "
        f"Servers ready in {t.get('ready', 0):.2f} s, workflow {t.get('workflow', 0):.2f} s, "
        f"teardown {t.get('teardown', 0):.2f} s."
    )
    if busiest is not None and (busiest["bytes_put"] or busiest["bytes_got"]):
        text += (
            f" Busiest node: {busiest['node']} "
            f"({format_size(busiest['bytes_put'] + busiest['bytes_got'])} moved)."
        )
    return text + f" Manifest and report: {job_dir}."


def _run_workflow(command: Sequence[str], env: dict[str, str]) -> tuple[int, list[int]]:
    """Run CMD, forwarding SIGTERM/SIGINT (the scheduler's walltime warning) to it."""
    workflow = subprocess.Popen(list(command), env=env)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if workflow.poll() is None:
            workflow.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = workflow.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return (rc if rc >= 0 else 128 - rc), received


def _launch_serverless(site: SiteConfig, command: Sequence[str], kind: str) -> int:
    """Connectors with no node servers (redis, file): a manifest, the workflow, a report.

    Task code is the same as with node servers: ``task_store()`` reads the
    connector from the manifest. The report has no per-node rows, since no
    server of ours saw the traffic.
    """
    from warpstore.hpc.connectors import connector_from_site
    from warpstore.hpc.manifest import write_manifest

    env_info, raw_id, job_dir = _job(site)
    job_id = raw_id.replace("/", "_")
    try:
        conn = connector_from_site(site, kind, job_dir)
    except (NotImplementedError, ValueError) as e:
        raise LaunchError(str(e)) from e
    manifest_path = job_dir / "manifest.json"
    manifest: dict[str, Any] = {
        **_manifest_head(site, env_info, job_id, job_dir),
        "servers": [],
        "connector": {"type": kind, "config": conn.config()},
        "created": time.time(),
    }
    write_manifest(manifest_path, manifest)
    conn.close()
    env = _job_env(site, job_id, {"WARPSTORE_MANIFEST": str(manifest_path)})
    logger.info("connector %s needs no node servers: %s", kind, manifest["connector"]["config"])
    t1 = time.monotonic()
    rc, received = _run_workflow(command, env)
    timings = {"ready": 0.0, "workflow": time.monotonic() - t1, "teardown": 0.0}
    report = {
        "job": job_id,
        "site": site.name,
        "connector": kind,
        "exit_code": rc,
        "nodes": [],
        "timings_s": timings,
        "servers_expected": 0,
        "servers_reported": 0,
    }
    write_json_atomic(job_dir / "report.json", report)
    print(
        f"warpstore: job {job_id} on site {site.name} used the {kind} connector (no node "
        f"servers); the workflow exited with {rc} after {timings['workflow']:.2f} s. "
        f"Manifest and report: {job_dir}.",
        flush=True,
    )
    if received:
        logger.warning("stopped early by %s", ", ".join(signal.Signals(x).name for x in received))
    return rc


def launch(
    site: SiteConfig,
    command: Sequence[str],
    *,
    connector: str | None = None,
    nodes: int | None = None,
    ready_timeout: float = 120.0,
) -> int:
    """Run ``command`` with a server on every node; return its exit status."""
    if not command:
        raise LaunchError("no command to run: give it after --")
    kind = connector or site["connector"]["type"]
    routed = kind == "multi"  # node servers for small objects, a shared store for large
    if routed:
        kind = site["connector"].get("routing", {}).get("node", "zmq")
    if kind not in NODE_SERVER_TRANSPORTS:
        return _launch_serverless(site, command, kind)
    env_info, job_id, job_dir = _job(site)
    num_nodes = nodes or (env_info.num_nodes if env_info.scheduler != "none" else site["nodes"])
    runtime_dir = job_dir / "runtime"
    runtime_dir.mkdir(exist_ok=True, mode=0o700)
    token_file = _token_file(job_dir)
    manifest_path = job_dir / "manifest.json"
    for stale in (manifest_path, Path(str(manifest_path) + ".failed")):
        stale.unlink(missing_ok=True)
    settings = node_server_settings(site, kind)
    ucx_env = settings.pop("ucx_env", None)
    protocol = settings.pop("protocol", None)

    child_env = _job_env(
        site,
        job_id,
        {"WARPSTORE_RUNTIME_DIR": str(runtime_dir), "WARPSTORE_TOKEN_FILE": str(token_file)},
    )
    if ucx_env:  # the servers and every task use the site's UCX settings
        child_env.update({str(k): str(v) for k, v in ucx_env.items()})
    if kind == "ucx":
        from warpstore.server.ucx_env import HOST_MEMORY_DEFAULTS, wheel_ucx_preload

        for key, value in HOST_MEMORY_DEFAULTS.items():
            child_env.setdefault(key, value)
        preload = wheel_ucx_preload()
        if preload:
            old = child_env.get("LD_PRELOAD")
            child_env["LD_PRELOAD"] = preload + (":" + old if old else "")
            logger.info(
                "UCX job with PyPI's mpich wheel: preloading the libucx wheel's UCX so that "
                "MPI and ucxx share it"
            )
    base: dict[str, Any] = {
        **_manifest_head(site, env_info, job_id, job_dir),
        "token_file": str(token_file),
        "runtime_dir": str(runtime_dir),
        "connector": {
            "type": kind,
            "config": {
                **{k: v for k, v in settings.items()},
                **({"ucx_env": ucx_env} if ucx_env else {}),
                **({"protocol": protocol} if protocol else {}),
                "token_file": str(token_file),
                "runtime_dir": str(runtime_dir),
            },
        },
    }
    if routed:
        from warpstore.hpc.connectors import routing_config

        try:
            base["connector"] = {
                "type": "multi",
                "config": routing_config(site, kind, base["connector"]["config"], str(job_dir)),
            }
        except (NotImplementedError, ValueError) as e:
            raise LaunchError(str(e)) from e
    base_path = job_dir / "manifest-base.json"
    write_json_atomic(base_path, base)

    line = site["launcher"]["servers"].format(nodes=num_nodes)
    server_cmd = [
        *shlex.split(line),
        sys.executable,
        "-m",
        "warpstore.hpc.server_rank",
        "--manifest",
        str(manifest_path),
        "--base",
        str(base_path),
    ]
    server_cmd += ["--transport", kind]
    if protocol:
        server_cmd += ["--protocol", protocol]
    if settings["interface"]:
        server_cmd += ["--interface", settings["interface"]]
    if settings["port"]:
        server_cmd += ["--port", str(settings["port"])]
    if settings["memory_limit"] is not None:
        server_cmd += ["--memory-limit", str(settings["memory_limit"])]
    server_env = dict(child_env)
    if "WARPSTORE_SIMULATE_NODES" in server_env:
        server_env["WARPSTORE_SIMULATE_NODES"] = "1"  # one server rank per simulated node

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    log_path = job_dir / "servers.log"
    with open(log_path, "ab") as log:
        servers = subprocess.Popen(
            server_cmd,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    failed_path = Path(str(manifest_path) + ".failed")
    try:
        while not manifest_path.exists():
            if failed_path.exists():
                failed = (read_json(failed_path) or {}).get("failed", [])
                where = "; ".join(f"node {f['node']} ({f['host']}): {f['error']}" for f in failed)
                raise LaunchError(f"storage server failed to start on {where}")
            if servers.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise LaunchError(
                    f"the server launch `{line}` exited with {servers.returncode} before the "
                    "servers were ready; last lines of " + str(log_path) + ":\n" + "\n".join(tail)
                )
            if time.monotonic() - t0 > ready_timeout:
                raise LaunchError(
                    f"servers not ready within {ready_timeout:.0f} s "
                    f"(launch line `{line}`; see {log_path})"
                )
            time.sleep(0.01)
    except BaseException:
        _end_process(servers, 10)
        raise
    timings["ready"] = time.monotonic() - t0
    manifest = read_manifest(manifest_path)
    logger.info(
        "%d servers ready in %.2f s: %s",
        len(manifest["servers"]),
        timings["ready"],
        ", ".join(f"{s['node']}={s['address']}" for s in manifest["servers"]),
    )

    child_env["WARPSTORE_MANIFEST"] = str(manifest_path)
    t1 = time.monotonic()
    rc, received = _run_workflow(command, child_env)
    timings["workflow"] = time.monotonic() - t1

    t2 = time.monotonic()
    manifest = read_manifest(manifest_path)  # elastic servers may have joined
    _stop_servers(manifest, str(token_file))
    _end_process(servers, 30)
    timings["teardown"] = time.monotonic() - t2
    report = _collect_report(job_dir, runtime_dir, manifest, rc, timings)
    print(_summary(report, job_dir), flush=True)
    if received:
        logger.warning("stopped early by %s", ", ".join(signal.Signals(s).name for s in received))
    return rc
