"""Training on several nodes (`train.num_nodes`): each node is a process torchrun started, with a disk of its own
(a pod each), talking DDP over the network. Here: 2 nodes x 1 CPU process (gloo) on loopback, as two `torchrun`
launches with a static rendezvous, each in its own workspace holding the same data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_train import TINY, make_workspace

from detops.config import load_params
from detops.errors import TrainingError
from detops.training.trainer import check_launcher

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
NODES = ["train.num_nodes=2", "train.devices=1", "train.strategy=ddp", "train.accelerator=cpu"]
NODE = '''
import hashlib, json, sys
from pathlib import Path

import pytorch_lightning as pl

from detops.config import load_params
from detops.steps import train
from detops.workspace import Workspace


class Digest(pl.Callback):
    """What this rank ends with: a hash of the weights it trained (DDP keeps them equal on every rank)."""

    def on_fit_end(self, trainer, module):
        digest = hashlib.sha256()
        for name, value in sorted(module.named_parameters()):
            digest.update(name.encode() + value.detach().cpu().numpy().tobytes())
        Path(sys.argv[2]).write_text(json.dumps({"rank": trainer.global_rank, "world": trainer.world_size,
                                                 "epochs": trainer.current_epoch, "weights": digest.hexdigest()}))


root = Path(sys.argv[1])
train.run(Workspace.at(root, load_params(root / "params.yaml", json.loads(sys.argv[3]))), callbacks=[Digest()])
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_several_nodes_need_a_launcher() -> None:
    """Without torchrun (or SLURM, Kubeflow...) the first rank would wait for nodes that never come: refused."""
    check_launcher(load_params(None, ["train.num_nodes=1"]).train)
    with pytest.raises(TrainingError, match=r"train.num_nodes is 2, but no launcher .*torchrun --nnodes 2"):
        check_launcher(load_params(None, NODES).train)


@pytest.mark.slow
def test_two_nodes_under_torchrun_train_the_same_weights(tmp_path: Path) -> None:
    """Node 0 and node 1 start together (`torchrun --nnodes 2 --node-rank i`); both ranks end with the same weights,
    only node 0 writes the checkpoint and the report (node 1's disk keeps nothing of the run)."""
    script = tmp_path / "node.py"
    script.write_text(NODE, encoding="utf-8")
    port = _free_port()
    roots = [tmp_path / f"node{i}" for i in range(2)]
    for root in roots:
        make_workspace(root)  # the same data on each node's own disk
    nodes = []
    for i, root in enumerate(roots):
        command = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(i),
                   "--master-addr", "127.0.0.1", "--master-port", str(port), str(script), str(root),
                   str(root / "rank.json"), json.dumps([*TINY, *NODES])]
        log = (root / "node.log").open("wb")
        nodes.append(subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [node.wait(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    logs = "\n".join((root / "node.log").read_text(errors="replace")[-3000:] for root in roots)
    assert codes == [0, 0], logs
    ranks = [json.loads((root / "rank.json").read_text()) for root in roots]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)], ranks
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["epochs"] == ranks[1]["epochs"] == 3
    assert (roots[0] / "models/best.ckpt").is_file() and (roots[0] / "reports/train.json").is_file()
    assert not (roots[1] / "models/best.ckpt").exists() and not (roots[1] / "reports/train.json").exists()


CLUSTER = ["deploy.image=registry.example.com/detops:0.1.0", "deploy.repository=https://git.example.com/detops.git",
           "deploy.gpus=1", "deploy.env_secret=detops-env", "deploy.node_selector={pool: gpu}",
           "deploy.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]"]


def test_the_job_of_the_other_nodes_is_valid_and_takes_the_pools_settings() -> None:
    """The Indexed Job a flow run submits for nodes 1..N-1, checked offline against strict Kubernetes schemas
    (kubernetes-validate), with the facts torchrun needs: one pod per other node, its node rank the completion
    index + 1, node 0's address, and the work pool's image, GPU limit, node selector, tolerations and Secret."""
    import shlex

    import kubernetes_validate

    from tasks.train_job import job_manifest

    params = load_params(None, [*NODES, "train.num_nodes=3", *CLUSTER])
    job = job_manifest(params, "detops-train-0123abcd", "c0ffee", "s3://b/resume/nodes/detops-train-0123abcd",
                       "10.0.0.7")
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["image"] == params.deploy.image and container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["envFrom"] == [{"secretRef": {"name": "detops-env"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DETOPS_COMMIT"] == "c0ffee" and env["DETOPS_REPOSITORY"] == params.deploy.repository
    torchrun = shlex.split(container["command"][-1].splitlines()[-1])
    option = {word: torchrun[i + 1] for i, word in enumerate(torchrun[:-1]) if word.startswith("--")}
    assert option["--nnodes"] == "3" and option["--node-rank"] == "$((JOB_COMPLETION_INDEX + 1))"
    assert option["--master-addr"] == "10.0.0.7" and option["--nproc-per-node"] == "1"
    assert torchrun[-1] == "train"


def test_the_runs_service_account_may_create_read_and_delete_jobs() -> None:
    """deployments/k8s-train/rbac.yaml, validated offline: the service account `deploy.service_account` names gets
    what node 0 does with the Job of the other nodes (tasks.train_job.KubernetesJobs)."""
    import kubernetes_validate
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deployments/k8s-train/rbac.yaml").read_text("utf-8"))}
    for doc in docs.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    account, role, binding = docs["ServiceAccount"], docs["Role"], docs["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    [rule] = role["rules"]
    assert rule["apiGroups"] == ["batch"] and "jobs" in rule["resources"]
    assert {"create", "get", "delete"} <= set(rule["verbs"])
    load_params(None, [f"deploy.service_account={account['metadata']['name']}"])


class LocalJobs:
    """The other nodes' pods as processes here: each runs its container's command with the Job's environment and
    its completion index, in a folder of its own standing for the pod's disk (DETOPS_NODE_ROOT). What Kubernetes
    adds (scheduling, the image) cannot be run here; the commands and the data path can."""

    def __init__(self, root: Path) -> None:
        self.root, self.created, self.deleted = root, [], []
        self.pods: list[subprocess.Popen[bytes]] = []

    def create(self, manifest: dict) -> None:
        self.created.append(manifest)
        spec = manifest["spec"]
        [container] = spec["template"]["spec"]["containers"]
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env |= {e["name"]: e["value"] for e in container["env"]}
        for index in range(spec["completions"]):
            pod = self.root / f"pod{index}"
            pod.mkdir(parents=True)
            env |= {"DETOPS_NODE_ROOT": str(pod), "JOB_COMPLETION_INDEX": str(index)}
            with (pod / "pod.log").open("wb") as log:
                self.pods.append(subprocess.Popen(container["command"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))

    def state(self, name: str) -> str:
        codes = [pod.poll() for pod in self.pods]
        if any(code not in (None, 0) for code in codes):
            return f"failed: BackoffLimitExceeded: exit codes {codes}"
        return "succeeded" if all(code == 0 for code in codes) else "running"

    def delete(self, name: str) -> None:
        self.deleted.append(name)
        for pod in self.pods:
            if pod.poll() is None:
                os.killpg(pod.pid, signal.SIGKILL)
                pod.wait()


@pytest.mark.slow
def test_the_flow_trains_as_node_0_and_submits_the_other_nodes_as_a_job(tmp_path: Path, s3: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.num_nodes=2` in a flow run: this process is node 0; the Job's pod clones the run's commit, downloads
    the inputs node 0 put on S3 (moto's server), and joins torchrun as node 1. Node 0's workspace ends with the
    checkpoint; the pod's disk with the inputs only; the Job and the inputs are gone."""
    from detops.training.nodes import node_inputs
    from tasks.train_job import train_on_nodes

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    store = f"{s3}/multinode-{uuid.uuid4().hex[:8]}"
    ws = make_workspace(repo, *NODES, *CLUSTER, f"deploy.repository={repo}", f"paths.resume_store={store}")
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    monkeypatch.setenv("POD_IP", "127.0.0.1")  # what the downward API gives a pod
    jobs = LocalJobs(tmp_path / "pods")
    result = train_on_nodes(ws, resume=False, jobs=jobs, flow_run_id=uuid.uuid4().hex, port=_free_port())
    pod = tmp_path / "pods" / "pod0"
    assert result.metrics["processes"] == 2, (pod / "pod.log").read_text(errors="replace")[-3000:]
    assert (repo / "models/best.ckpt").is_file()
    inputs = {p.resolve().relative_to(repo).as_posix() for p in node_inputs(ws)}
    got = {p.relative_to(pod / "ws").as_posix() for p in (pod / "ws").rglob("*") if p.is_file()}
    assert inputs <= got and not (pod / "ws/models/best.ckpt").exists(), sorted(got - inputs)
    assert (pod / "code/.git").is_dir()  # the run's commit, cloned
    [job] = jobs.created
    assert jobs.deleted == [job["metadata"]["name"]]
    from detops.objectstore import open_fs

    fs, prefix = open_fs(f"{store}/nodes/{job['metadata']['name']}")
    assert not fs.exists(prefix)


def test_training_inputs_outside_the_workspace_are_refused(tmp_path: Path) -> None:
    """A node receives the workspace's files only: a split naming an image elsewhere fails before any pod starts."""
    from detops.dataset.canonical import read_dataset, write_dataset
    from detops.training.nodes import node_inputs, write_run_params

    ws = make_workspace(tmp_path / "ws", *NODES)
    write_run_params(ws)
    assert len(node_inputs(ws)) == 1 + 3 + 14
    dataset = read_dataset(ws.split_json("train"))
    dataset["info"] = {**dataset.get("info", {}), "root": str(tmp_path / "elsewhere")}
    write_dataset(ws.split_json("train"), dataset)
    with pytest.raises(TrainingError, match="outside the workspace"):
        node_inputs(ws)
