"""`ray up` / `ray job submit` / `ray down` over real SSH on this machine: Ray's `local` provider with the head on
127.0.0.2 and a worker on 127.0.0.3 (not 127.0.0.1: Ray replaces that address with the machine's own, and its
autoscaler then loses the head it launched), both reached through an sshd of the test's own (Debian's openssh-server)
on port 22 (the head's autoscaler reaches workers there). From `cluster.yaml` it takes the shared `setup_commands`
block verbatim except the package installs, its `file_mounts` (the working tree and the token file) and
`rsync_exclude`. The start commands are the AWS ones with the differences two nodes on one machine force: no `ray
stop` before `ray start` (on one machine it would stop the other node), explicit ports, each node's address from
SSH_CONNECTION and its own temp folder, MLflow on SQLite instead of PostgreSQL and S3.

The "machines" and the launcher run as an unprivileged user made for the test, with a home in a temp folder; the node
"image" is a venv on Debian's python3 that sees this checkout's packages (the checkout's own interpreter may live
under /root), and the tree `ray up` rsyncs to the nodes comes first on their PYTHONPATH, so the trials run the copied
code. sshd and everything it starts run in their own PID namespace, killed together at the end. Needs root,
/usr/sbin/sshd, rsync, unshare, a /usr/bin/python3 of this Python's minor version and port 22 free on 127.0.0.2-3;
skips with the reason otherwise (`apt-get install -y openssh-server rsync`)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest
import yaml
from helpers import free_ports

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = "sqzray"
NODES = ("127.0.0.2", "127.0.0.3")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (adds a user, runs an sshd on port 22 in its own PID namespace)"
    need = {"/usr/sbin/sshd": "openssh-server", "rsync": "rsync", "ssh-keygen": "openssh-client", "useradd": "passwd",
            "unshare": "util-linux"}
    absent = [pkg for tool, pkg in need.items() if not (os.path.exists(tool) or shutil.which(tool))]
    if absent:
        return f"needs {' '.join(absent)} (apt-get install -y {' '.join(absent)})"
    system = subprocess.run(["/usr/bin/python3", "-c", "import sys, venv; print(*sys.version_info[:2])"],
                            capture_output=True, text=True) if os.path.exists("/usr/bin/python3") else None
    if not system or system.stdout.split() != [str(v) for v in sys.version_info[:2]]:
        return f"needs /usr/bin/python3 {sys.version_info[0]}.{sys.version_info[1]} with venv for the nodes' venv"
    for host in NODES:
        with socket.socket() as sock:
            try:
                sock.bind((host, 22))
            except OSError as exc:
                return f"port 22 on {host} is taken ({exc}): another sshd listens on every address"
    return None


def _wait_port(host: str, port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"nothing listens on {host}:{port}"
            time.sleep(0.2)


def _left(marker: str) -> list:
    """Ray daemons still running with ``marker`` (the test's temp folder) in their command line."""
    import psutil

    return [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if any(marker in c for c in p.info["cmdline"] or []) and
            any(d in " ".join(p.info["cmdline"]) for d in ("raylet", "gcs_server", "dashboard"))]


def _node_venv(base: str) -> str:
    """The nodes' Python: a venv on /usr/bin/python3 that adds this checkout's site-packages, with its own `ray`,
    `mlflow` and `squeeze` commands."""
    venv = os.path.join(base, "venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
    site = subprocess.run([f"{venv}/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "squeeze_checkout.pth"), "w") as fh:
        fh.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    for tool in ("ray", "mlflow", "squeeze"):
        with open(os.path.join(os.path.dirname(sys.executable), tool)) as fh:
            script = fh.read().split("\n", 1)[1]
        with open(os.path.join(venv, "bin", tool), "w") as fh:
            fh.write(f"#!{venv}/bin/python\n{script}")
        os.chmod(os.path.join(venv, "bin", tool), 0o755)
    return venv


def _open_to_others(path: str) -> list[tuple[str, int]]:
    """Let other users traverse (not list) every folder above ``path``; returns the (folder, mode) pairs it changed.

    The nodes' venv imports this checkout's site-packages as USER, and a checkout under a 0700 folder (``mktemp -d``,
    /root) would hide it: ``ModuleNotFoundError: No module named 'ray'`` from ``ray up``."""
    changed, folder = [], os.path.dirname(os.path.abspath(path))
    while True:
        mode = os.stat(folder).st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(folder, mode | 0o001)
            changed.append((folder, mode))
        if folder == os.path.dirname(folder):
            return changed
        folder = os.path.dirname(folder)


def _as_user(cmd: list[str], env: dict, timeout: float, check: bool = True, cwd: str | None = None):
    """Run ``cmd`` as USER; its output also goes to a log beside it (``<base>/<tool>-<verb>.log``) for a post-mortem."""
    pw = pwd.getpwnam(USER)
    log = os.path.join(os.path.dirname(pw.pw_dir), f"{os.path.basename(cmd[0])}-{cmd[1]}.log")
    with open(log, "w") as out:
        try:
            code = subprocess.run(cmd, cwd=cwd, env={**env, "HOME": pw.pw_dir, "USER": USER, "LOGNAME": USER},
                                  user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
    with open(log) as fh:
        output = fh.read()
    assert not check or code == 0, f"{' '.join(cmd)} ({'timed out' if code is None else code}): {output[-8000:]}"
    return subprocess.CompletedProcess(cmd, code, output, "")


@pytest.fixture
def loopback_nodes():
    """Two SSH-reachable "machines", 127.0.0.2 and 127.0.0.3, logging in as USER whose home lives in a temp folder."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    base = tempfile.mkdtemp(prefix="sqzssh", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    os.chmod(base, 0o755)
    home = os.path.join(base, "home")
    subprocess.run(["userdel", "-f", USER], capture_output=True)  # a run killed before its teardown
    # and its SSH control sockets' folder (Ray's: /tmp/ray_ssh_<sha256(user)[:10]>), which a new USER could not use
    shutil.rmtree(f"/tmp/ray_ssh_{hashlib.sha256(USER.encode()).hexdigest()[:10]}", ignore_errors=True)
    subprocess.run(["useradd", "-M", "-d", home, "-s", "/bin/bash", USER], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # no password, not locked (sshd refuses a locked one)
    sshd, opened = None, []
    try:
        opened = _open_to_others(sysconfig.get_paths()["purelib"])
        venv, tree = _node_venv(base), os.path.join(base, "tree")
        # the user's working tree, which `ray up` hashes and rsyncs: this checkout without what cluster.yaml excludes
        # (the checkout's .venv points at an interpreter the user cannot read)
        with open(os.path.join(REPO, "cluster.yaml")) as fh:
            excluded = yaml.safe_load(fh)["rsync_exclude"]
        subprocess.run(["rsync", "-a", *(f"--exclude={e}" for e in excluded), f"{REPO}/", f"{tree}/"], check=True)
        os.makedirs(os.path.join(home, ".ssh"))
        key, hostkey = os.path.join(base, "key"), os.path.join(base, "hostkey")
        for path in (key, hostkey):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        shutil.copy(key + ".pub", os.path.join(home, ".ssh", "authorized_keys"))
        with open(os.path.join(home, ".bashrc"), "w") as fh:  # what a node image would have: the tools on PATH
            fh.write(f"export PATH={venv}/bin:$PATH PYTHONPATH=$HOME/squeeze\n"
                     # each node its own Ray temp folder (separate machines each have their own /tmp)
                     f"export RAY_TMPDIR={base}/tmp-$(echo $SSH_CONNECTION | awk '{{print $3}}')\n"
                     "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1\n"
                     f"export SQUEEZE_STORAGE_PATH={base}/results\n")
        dirs = (*(f"tmp-{n}" for n in NODES), "results", "job", "launcher")
        owned = [home, key, tree] + [os.path.join(base, d) for d in dirs]
        for d in owned[3:]:
            os.makedirs(d)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", *owned], check=True)
        os.chmod(os.path.join(home, ".ssh"), 0o700)
        config = os.path.join(base, "sshd_config")
        with open(config, "w") as fh:
            fh.write("Port 22\n" + "".join(f"ListenAddress {n}\n" for n in NODES) + f"HostKey {hostkey}\n"
                     f"PidFile {base}/sshd.pid\nAuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\n"
                     f"KbdInteractiveAuthentication no\nUsePAM no\nAllowUsers {USER}\n")
        os.makedirs("/run/sshd", exist_ok=True)
        # sshd is the namespace's PID 1: when it dies (unshare --kill-child), every process of the "cluster" dies too
        sshd = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "/usr/sbin/sshd", "-D",
                                 "-e", "-f", config], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(base, "sshd.log"), "w"))
        for host in NODES:
            _wait_port(host, 22)
            login = _as_user(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-o",
                              f"UserKnownHostsFile={os.devnull}", f"{USER}@{host}", "echo $SSH_CONNECTION"],
                             dict(os.environ), 30, check=False)
            said = login.stdout.strip().splitlines()
            assert login.returncode == 0 and said[-1].split()[2] == host, (login.stdout, open(f"{base}/sshd.log").read())
        yield {"base": base, "home": home, "key": key, "venv": venv, "tree": tree}
    finally:
        if sshd:
            sshd.kill()
            sshd.wait(30)
        for folder, mode in opened:
            os.chmod(folder, mode)
        subprocess.run(["userdel", "-f", USER], capture_output=True)
        shutil.rmtree(f"/tmp/ray_ssh_{hashlib.sha256(USER.encode()).hexdigest()[:10]}", ignore_errors=True)
        if not os.environ.get("SQUEEZE_KEEP_SSH_TEST"):
            shutil.rmtree(base, ignore_errors=True)


def _cluster_config(nodes: dict, token: str, ports: dict) -> dict:
    """cluster.yaml's shared block and file mounts on the two loopback nodes."""
    with open(os.path.join(REPO, "cluster.yaml")) as fh:
        aws = yaml.safe_load(fh)
    home, node_ip = nodes["home"], "$(echo $SSH_CONNECTION | awk '{print $3}')"
    accounts = os.path.join(os.path.dirname(token), "squeeze-accounts")  # the user's ~/.squeeze: MLflow accounts
    os.makedirs(accounts, exist_ok=True)
    open(os.path.join(accounts, "mlflow.env"), "w").close()  # the test's MLflow runs without the auth app
    for path in (accounts, os.path.join(accounts, "mlflow.env")):
        shutil.chown(path, USER, USER)
    mounts = {dst.replace("/home/ubuntu", home): (token if dst.endswith("auth_token") else
                                                  accounts if dst.endswith("/.squeeze") else src)
              for dst, src in aws["file_mounts"].items()}
    setup = [c for c in aws["setup_commands"] if "apt-get" not in c and "pip install" not in c]
    assert len(setup) == len(aws["setup_commands"]) - 3, aws["setup_commands"]  # only the installs are left out
    mlflow = (f"nohup mlflow server --host 127.0.0.1 --port {ports['mlflow']} --backend-store-uri sqlite:///{home}/mlflow.db"
              f" --artifacts-destination {home}/mlartifacts > ~/mlflow-127.0.0.1.log 2>&1 &")
    # cluster.yaml's own wait for MLflow, verbatim but for the port: `ray up` returns once the server answers
    wait = [c for c in aws["head_start_ray_commands"] if "/health" in c]
    assert len(wait) == 1 and wait[0].count(":5000/") == 2, aws["head_start_ray_commands"]
    wait = wait[0].replace(":5000/", f":{ports['mlflow']}/")
    head = (f"export RAY_AUTH_MODE=token MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['mlflow']} && "
            f"ray start --head --port={ports['gcs']} --node-ip-address={node_ip} --num-cpus=0 "
            f"--dashboard-host=127.0.0.1 --dashboard-port={ports['dashboard']} "
            f"--dashboard-agent-listen-port={ports['agent_head']} --ray-client-server-port={ports['client']} "
            "--autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats")
    worker = (f"RAY_AUTH_MODE=token ray start --address=$RAY_HEAD_IP:{ports['gcs']} --node-ip-address={node_ip} "
              f"--num-cpus=1 --dashboard-agent-listen-port={ports['agent_worker']} --disable-usage-stats "
              # a joining node takes the head's temp folder unless told: on one machine both would then share one
              # runtime-env folder, and the worker's agent deleted the job's working_dir under the running driver
              "--temp-dir=$RAY_TMPDIR/ray")
    return {"cluster_name": f"sqzssh{os.getpid()}", "max_workers": 1, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "local", "head_ip": NODES[0], "worker_ips": [NODES[1]]},
            "auth": {"ssh_user": USER, "ssh_private_key": nodes["key"]},
            "file_mounts": mounts, "rsync_exclude": aws["rsync_exclude"], "initialization_commands": [],
            "setup_commands": setup, "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [mlflow, wait, head], "worker_start_ray_commands": [worker]}


def _ray(nodes: dict, args: list[str], env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    """The `ray` CLI as the user would run it: as USER, from the root of the user's copy of this working tree."""
    return _as_user([os.path.join(nodes["venv"], "bin", "ray"), *args], env, timeout, check, cwd=nodes["tree"])


def test_ray_up_over_ssh_runs_a_submitted_sweep_on_the_worker_then_ray_down(loopback_nodes):
    from mlflow import MlflowClient

    base = loopback_nodes["base"]
    token = os.path.join(base, "auth_token")
    with open(token, "w") as fh:  # what `ray get-auth-token --generate` writes, here outside ~/.ray
        fh.write(secrets.token_hex(32))
    shutil.chown(token, USER, USER)
    os.chmod(token, 0o600)
    ports = dict(zip(("gcs", "dashboard", "agent_head", "agent_worker", "client", "mlflow"), free_ports(6)))
    config = os.path.join(base, "cluster.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(_cluster_config(loopback_nodes, token, ports), fh)
    # `ray up` writes the local provider's node file under its Ray temp folder and copies it to the same path on the
    # head, where the head's autoscaler reads it: on one machine, launcher and head share the head's temp folder
    env = {**os.environ, "RAY_TMPDIR": os.path.join(base, f"tmp-{NODES[0]}"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": token,
           # Ray 2.60's autoscaler v2 counts the head against the local provider's one node type and never launches
           # the listed workers (it has them all already); v1 launches them
           "RAY_UP_enable_autoscaler_v2": "0",
           "TMPDIR": os.path.join(base, "launcher")}  # where `ray up` caches the resolved config (/tmp/ray-config-*)
    env.pop("RAY_ADDRESS", None)
    try:
        _ray(loopback_nodes, ["up", "-y", "--no-config-cache", config], env, timeout=420)
        dashboard = f"http://127.0.0.1:{ports['dashboard']}"
        deadline = time.time() + 240  # the head's autoscaler now launches the worker over SSH
        while True:
            listed = _ray(loopback_nodes, ["list", "nodes", "--address", dashboard, "--format", "json"], env, 60, check=False)
            text = listed.stdout[listed.stdout.find("["):] if listed.returncode == 0 else ""
            nodes = json.loads(text) if text.strip().startswith("[") else []
            alive = {n["node_ip"]: n["node_id"] for n in nodes if n["state"] == "ALIVE"}
            if set(alive) == set(NODES):
                break
            assert time.time() < deadline, ([(n["node_ip"], n["state"], n["is_head_node"]) for n in nodes],
                                             listed.stdout[-3000:])
            time.sleep(3)
        job_dir = os.path.join(base, "job")
        with open(os.path.join(job_dir, "tiny.yaml"), "w") as fh:
            fh.write(yaml.safe_dump({"experiment": "over-ssh", "sweeps": [{
            "name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
            "train": {"epochs": 1, "batch_size": 16, "max_length": 32}, "measure": {"latency": False},
            "search_space": {"seed": {"grid_search": [0, 1]}}}]}))
        job = _ray(loopback_nodes, ["job", "submit", "--address", dashboard, "--working-dir", job_dir, "--",
                    "squeeze", "study", "tiny.yaml"], env, timeout=600, check=False)
        if not (job.returncode == 0 and "succeeded" in job.stdout):
            with open(os.path.join(loopback_nodes["home"], "mlflow-127.0.0.1.log"), errors="replace") as fh:
                server_log = fh.read()[-3000:]
            pytest.fail(f"{job.stdout[-6000:]}\n--- the head's MLflow server log ---\n{server_log}")
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['mlflow']}")  # the URI the head gave the job
        exp = client.get_experiment_by_name("over-ssh")
        runs = client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        assert {r.data.tags["ray.node_id"] for r in runs} == {alive[NODES[1]]}  # the head has no CPU for trials
        # the code the trials ran is the tree `ray up` rsynced to the node, not this checkout
        assert os.path.isfile(os.path.join(loopback_nodes["home"], "squeeze", "squeeze", "driver", "sweep.py"))
        assert not os.path.exists(os.path.join(loopback_nodes["home"], "squeeze", ".venv"))  # rsync_exclude
        assert oct(os.stat(os.path.join(loopback_nodes["home"], ".ray", "auth_token")).st_mode)[-3:] == "600"
    finally:
        down = _ray(loopback_nodes, ["down", "-y", config], env, timeout=300, check=False)
    assert down.returncode == 0, down.stdout[-4000:]
    time.sleep(2)
    assert not _left(base), _left(base)  # `ray down` stopped both nodes' Ray
