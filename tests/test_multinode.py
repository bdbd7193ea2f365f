"""Training on several nodes (`train.num_nodes`): each node is a process torchrun started, with a disk of its own
(a pod each), talking DDP over the network. Here: 2 nodes x 1 CPU process (gloo) on loopback, as two `torchrun`
launches with a static rendezvous, each in its own workspace holding the same data."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
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


def test_the_multinode_job_manifest_is_valid_and_its_node_counts_agree() -> None:
    """deployments/k8s-train/multinode.yaml, checked offline like deployments/k8s/: strict Kubernetes schemas, and
    the facts torchrun needs: one pod per node (completions = parallelism = --nnodes = train.num_nodes), the node
    rank from the completion index, the rendezvous at pod 0's name through the headless Service."""
    import shlex

    import kubernetes_validate
    import yaml

    docs = list(yaml.safe_load_all((REPO / "deployments/k8s-train/multinode.yaml").read_text(encoding="utf-8")))
    version = kubernetes_validate.latest_version()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    service = next(d for d in docs if d["kind"] == "Service")
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]
    [container] = pod["spec"]["containers"]
    words = shlex.split(container["args"][0].replace('"$JOB_COMPLETION_INDEX"', "INDEX"))
    option = {word: words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")}
    sets = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--set")
    nodes = int(option["--nnodes"])
    assert job["spec"]["completionMode"] == "Indexed" and nodes > 1
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes == int(sets["train.num_nodes"])
    assert option["--node-rank"] == "INDEX" and words[:2] == ["exec", "torchrun"] and words[-1] == "train"
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert option["--nproc-per-node"] == sets["train.devices"] == str(gpus)  # one process per GPU
    assert service["spec"]["clusterIP"] == "None" and pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert option["--master-addr"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["port"] for p in service["spec"]["ports"]} == {int(option["--master-port"])}
    assert option["--workspace"] == container["workingDir"] == container["volumeMounts"][0]["mountPath"]
    load_params(None, [f"{k}={v}" for k, v in sets.items()])  # every --set is a param detops knows
