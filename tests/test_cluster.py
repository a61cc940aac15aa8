"""Cluster launch files: manifests parse, every command they run names a real module and a config that
validates, the Docker / `ray up` pins agree with pyproject.toml, and the Slurm script is valid bash."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from rayunify.config import Config, load_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
MANIFESTS = sorted(CLUSTER.rglob("*.yaml"))
GUIDE_PAGES = sorted((ROOT / "docs" / "guide").glob("*.md"))  # the user guide's commands are checked as README's
LAUNCH_FILES = [*MANIFESTS, CLUSTER / "slurm" / "launch.sbatch", CLUSTER / "Dockerfile", ROOT / "README.md", *GUIDE_PAGES]
PINNED = ("torch", "deepspeed", "transformers", "peft", "ray", "wandb")

# `python -m module [--config FILE] [key=value ...]`, wherever a launcher runs the trainer.
COMMAND = re.compile(r"python3?\s+-m\s+([\w.]+)((?:[ \t]+(?!\\)[^\s\\]+)*)")


def shell_defaults(text: str) -> str:
    """`${CONFIG:-examples/x.yaml}` → examples/x.yaml: what the script runs when nothing is set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def commands(path: Path) -> list[tuple[str, list[str]]]:
    text = path.read_text()
    if path.name == "Dockerfile":  # exec-form CMD ["python", "-m", ...]
        text += "\n" + "\n".join(" ".join(json.loads(m)) for m in re.findall(r"^CMD (\[.*\])$", text, re.M))
    text = shell_defaults(text.replace("\\\n", " "))
    out = []
    for module, rest in COMMAND.findall(text):
        args = shlex.split(rest.replace("'", "").replace('"', ""))
        ends = [i for i, a in enumerate(args) if a in ("#", "&&", ";", "|") or "`" in a]  # comment, next command, prose
        out.append((module, args[: ends[0]] if ends else args))
    return out


ENTRYPOINTS = [(p, module, args) for p in LAUNCH_FILES for module, args in commands(p) if module.startswith("rayunify")]


def test_every_launcher_runs_the_trainer():
    runs_train = {path.name for path, module, _ in ENTRYPOINTS if module == "rayunify.train"}
    assert {"rayjob.yaml", "launch.sbatch", "Dockerfile", "ray-cluster.yaml", "README.md", "clusters.md"} <= runs_train


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_parses(manifest):
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


@pytest.mark.parametrize(
    "path,module,args", ENTRYPOINTS, ids=[f"{p.name}:{m}:{' '.join(a)[:60]}" for p, m, a in ENTRYPOINTS]
)
def test_entrypoint_module_exists_and_config_validates(path, module, args):
    assert importlib.util.find_spec(module) is not None, f"{path.name} runs missing module {module}"
    if "--config" not in args or len(args) == args.index("--config") + 1:
        assert path.suffix == ".md", f"{path.name} runs {module} without a config"
        return  # prose in README or the guide ("--config <recipe>")
    config = ROOT / args[args.index("--config") + 1]
    assert config.is_file(), f"{path.name} names config {config}, which does not exist"
    # Overrides that the launcher fixes (not shell variables) must validate together with the file.
    overrides = [a for a in args[args.index("--config") + 2 :] if "=" in a and "$" not in a]
    assert isinstance(load_config(config, overrides), Config)


def dockerfile_pins() -> dict[str, Version]:
    text = (CLUSTER / "Dockerfile").read_text()
    found = re.findall(r'"?([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?==([\w.]+)"?', text)
    return {name.lower(): Version(version) for name, version in found}


def pyproject_bounds() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(dep).name.lower(): Requirement(dep) for dep in project["dependencies"]}


def test_dockerfile_pins_satisfy_pyproject_bounds():
    pins, bounds = dockerfile_pins(), pyproject_bounds()
    assert set(PINNED) <= set(pins), f"Dockerfile must pin {PINNED}, pins {sorted(pins)}"
    for name, version in pins.items():
        assert name in bounds, f"Dockerfile pins {name}, which pyproject.toml does not depend on"
        assert bounds[name].specifier.contains(version, prereleases=True), (
            f"Dockerfile pins {name}=={version}, outside pyproject.toml's {bounds[name]}"
        )
    assert "vllm" not in pins, "vLLM belongs in its own environment, never in the main image"


def test_ray_up_installs_the_same_pins_and_the_project():
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    setup = " ".join(config["setup_commands"])
    pins = {name.lower(): Version(v) for name, v in re.findall(r'"?([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?==([\w.]+)', setup)}
    assert pins == {k: v for k, v in dockerfile_pins().items() if k in pins} and set(PINNED) <= set(pins)
    assert "pip install -q -e /home/ubuntu/rayunify" in setup
    assert config["file_mounts"]["/home/ubuntu/rayunify"] == "."
    assert config["head_node_type"] in config["available_node_types"]
    assert "ray start --head" in " ".join(config["head_start_ray_commands"])
    assert "--force" not in " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])


def test_rayjob_has_head_gpu_workers_secret_and_cleanup():
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypoint"].startswith("python -m rayunify.train --config examples/")
    cluster = spec["rayClusterSpec"]
    assert Version(cluster["rayVersion"]) == dockerfile_pins()["ray"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    workers = [c for group in cluster["workerGroupSpecs"] for c in group["template"]["spec"]["containers"]]
    assert any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0 for c in workers)
    for container in head + workers:
        env = {e["name"]: e for e in container["env"]}
        assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["key"], "WANDB_API_KEY must come from a Secret"
        assert "value" not in env["WANDB_API_KEY"]


def test_slurm_script_is_valid_bash():
    script = CLUSTER / "slurm" / "launch.sbatch"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert "ray start --head" in text and "ray start --block --address" in text and "srun" in text
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
