"""Training on several nodes that share no disk (`train.num_nodes` > 1, pods on a cluster).

The flow run's own process is node 0; the other nodes start elsewhere (the pods of an Indexed Job the flow submits,
`tasks.train_job`) with an image and a checkout only. So node 0 uploads what training reads (the run's params and
the split files with every image they name) to an object-store prefix, and each other node downloads that into a
workspace of its own before torchrun starts it. Every node then trains the same DDP model; only node 0 writes the
checkpoints, reports and the MLflow run, in the flow's workspace, where `evaluate` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detops.errors import TrainingError
from detops.objectstore import open_fs

if TYPE_CHECKING:
    from detops.config.train import TrainParams
    from detops.workspace import Workspace

PARAMS_FILE = ".detops/train-params.yaml"  # the run's effective params, as every node's `detops train` reads them
MASTER_PORT = 29500  # torchrun's default rendezvous port, on node 0


def write_run_params(ws: Workspace) -> Path:
    """The params this run trains with (params.yaml with its overrides), for a `detops train` in another process."""
    import yaml

    from detops.atomic import write_text

    return write_text(ws.root / PARAMS_FILE, yaml.safe_dump(ws.params.to_dict(), sort_keys=False))


def node_inputs(ws: Workspace) -> list[Path]:
    """What a node other than 0 reads: the run's params, the three split files and the images they name. Each must
    lie inside the workspace, since it lands at the same relative place in the node's own."""
    from detops.dataset.canonical import image_path, read_dataset

    files = [ws.root / PARAMS_FILE]
    for split in ("train", "val", "test"):
        path = ws.split_json(split)
        dataset = read_dataset(path)
        files += [path, *(image_path(dataset, image, ws.root) for image in dataset["images"])]
    outside = [p for p in files if not p.resolve().is_relative_to(ws.root)]
    if outside:
        raise TrainingError(f"{len(outside)} file(s) training reads lie outside the workspace (first: {outside[0]}); "
                            "training on several nodes sends each node the workspace's files only. Import the "
                            "dataset into the workspace (import.source under it) or set train.num_nodes=1.")
    return sorted(set(files))


def upload_inputs(ws: Workspace, url: str) -> int:
    """Node 0's side: every input file under `url`, at its path in the workspace. Returns how many."""
    fs, prefix = open_fs(url)
    files = node_inputs(ws)
    for path in files:
        fs.put_file(str(path), f"{prefix}/{path.resolve().relative_to(ws.root).as_posix()}")
    return len(files)


def download_inputs(url: str, root: Path) -> int:
    """Another node's side: what node 0 uploaded to `url`, into workspace `root`. Returns how many files."""
    fs, prefix = open_fs(url)
    found = [str(p) for p in fs.find(prefix)]
    if not found:
        raise TrainingError(f"{url} holds no inputs: node 0 uploads them before it starts the other nodes")
    for remote in found:
        relative = remote[len(prefix) + 1:]
        target = (root / relative).resolve()
        if not target.is_relative_to(root.resolve()):
            raise TrainingError(f"{remote}: lands outside the workspace {root}; refused")
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    return len(found)


def remove_inputs(url: str) -> None:
    """The prefix is scratch for one run: gone once the nodes are done."""
    fs, prefix = open_fs(url)
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)


def torchrun_command(params: TrainParams, node_rank: str, master_addr: str, workspace: str, params_file: str,
                     port: int = MASTER_PORT, resume: bool = False, python: str = "python") -> list[str]:
    """torchrun's `... -m detops train` for one node: its rank (a number, or a shell expression in a pod), node 0's
    address and port. Lightning reads the ranks from torchrun's environment."""
    per_node = "auto" if params.devices == "auto" else str(params.devices)
    return [python, "-m", "torch.distributed.run", "--nnodes", str(params.num_nodes), "--nproc-per-node", per_node,
            "--node-rank", node_rank, "--master-addr", master_addr, "--master-port", str(port), "-m", "detops",
            "--workspace", workspace, "--params", params_file, "train", *(["--resume"] if resume else [])]
