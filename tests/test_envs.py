"""The conda environments (workflow/envs) and pyproject.toml name the same packages, and every rule that runs
something names one of those environments."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "workflow/envs"
RULES = ROOT / "workflow/rules"

# conda name -> the distribution name that pyproject.toml uses
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "pybigwig": "pybigwig",
    "hic-straw": "hic-straw",
    "mamba-ssm": "mamba-ssm",
    "causal-conv1d": "causal-conv1d",
    "matplotlib-base": "matplotlib",
}
# in the environments only: the interpreter, pip, and a binary that pybedtools calls (bedtools)
CONDA_ONLY = {"python", "pip", "bedtools"}
# in pyproject.toml only: what runs the workflow (Snakemake validates the config with jsonschema itself),
# never what its jobs import
PYPROJECT_ONLY = {"snakemake", "jsonschema"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return norm(re.match(r"\s*([A-Za-z0-9_.-]+)", req)[1])


def conda_name(spec: str) -> str:
    name = re.split(r"[\s=<>!~]", spec.strip().split("::")[-1], maxsplit=1)[0]
    return norm(name)


# a pip entry of an environment: the project itself, or a PyPI package that conda-forge lacks, pinned exactly
PIP_PINNED = re.compile(r"([A-Za-z0-9_.-]+)==[A-Za-z0-9_.+-]+")


def env_packages(path: Path) -> dict[str, str]:
    """{PyPI name: conda or pip spec} of one environment file (besides the project, pip entries are PyPI packages)."""
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, dep
            for p in dep["pip"]:
                if not p.startswith("-e "):
                    m = PIP_PINNED.fullmatch(p)
                    assert m, f"{path.name}: pip entry {p!r} must be NAME==VERSION"
                    out[norm(m[1])] = p
            continue
        name = conda_name(dep)
        if name not in CONDA_ONLY:
            out[CONDA_TO_PYPI.get(name, name)] = dep
    return out


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"].get("gpu", []))
    return {requirement_name(r) for r in reqs}


def rules() -> dict[str, str]:
    """{rule name: its body} of every rule in workflow/rules (snakefmt layout: bodies are indented)."""
    found = {}
    for smk in sorted(RULES.glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            found[m[1]] = m[2]
    return found


def test_environments_and_pyproject_name_the_same_packages():
    in_envs = set()
    for path in sorted(ENVS.glob("*.yaml")):
        in_envs |= set(env_packages(path))
    in_pyproject = pyproject_packages() - PYPROJECT_ONLY
    assert in_envs - in_pyproject == set(), "in workflow/envs but not in pyproject.toml"
    assert in_pyproject - in_envs == set(), "in pyproject.toml but in no environment"


@pytest.mark.parametrize("env", sorted(p.name for p in ENVS.glob("*.yaml")))
def test_environment_is_pinned_and_installs_the_project(env):
    data = yaml.safe_load((ENVS / env).read_text())
    assert "nodefaults" in data["channels"] and data["channels"][0] == "conda-forge"
    for dep in data["dependencies"]:
        if isinstance(dep, str) and conda_name(dep) != "pip":
            assert re.search(r"[=<>]", dep), f"{env}: {dep} has no version"
    pip = [d for d in data["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1 and pip[0]["pip"][0] == "-e ../..", f"{env} must install the project (two folders up)"
    assert all(PIP_PINNED.fullmatch(p) for p in pip[0]["pip"][1:]), f"{env}: other pip entries are NAME==VERSION"
    assert (ENVS / "../.." / "pyproject.toml").resolve() == ROOT / "pyproject.toml"


def test_gpu_environment_has_the_kernels():
    train = env_packages(ENVS / "train.yaml")
    assert {"torch", "mamba-ssm", "causal-conv1d", "lightning"} <= set(train)
    assert conda_name(train["torch"]) == "pytorch-gpu"


def test_every_rule_that_runs_something_names_an_existing_environment():
    found = rules()
    assert {"download", "train", "evaluate", "shard"} <= set(found)
    runs = {name: body for name, body in found.items() if re.search(r"^\s+(script|shell|run|wrapper):", body, re.M)}
    assert runs, "no rule runs anything?"
    used = set()
    for name, body in runs.items():
        m = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, re.M)
        assert m, f"rule {name} names no conda environment"
        env = (RULES / m[1]).resolve()
        assert env.parent == ENVS.resolve() and env.exists(), f"rule {name}: {m[1]} does not exist"
        used.add(env.name)
    # and no environment is left unused
    assert used == {p.name for p in ENVS.glob("*.yaml")}


def test_rules_without_an_environment_only_collect_targets():
    for name, body in rules().items():
        if "conda:" not in body:
            assert re.fullmatch(r"\s*(localrule: True\s*\n)?\s*input:\s*\n(\s+[\w\"(),./{}\[\]]+,\s*\n)+"
                                r"\s*(localrule: True\s*\n)?\s*", body), \
                f"rule {name}"
