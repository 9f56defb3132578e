"""cluster.yaml is a valid Ray cluster launcher config (Ray's own schema and checks)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_matches_ray_schema(config: dict) -> None:
    """The raw file against ray/autoscaler/ray-schema.json, as `ray up` validates it."""
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(config, schema)


def test_ray_up_prepare_and_validate(config: dict) -> None:
    """Ray's own pipeline: merge with the AWS defaults, then validate_config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_cpu_head_and_gpu_workers(config: dict) -> None:
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [spec for name, spec in node_types.items() if name != config["head_node_type"]]
    assert workers and all(spec["resources"].get("GPU", 0) >= 1 for spec in workers)
    assert config["provider"]["type"] == "aws"


def test_current_ray_images(config: dict) -> None:
    """rayproject/ray images (ray-ml is retired), the GPU flavour on workers, tag = installed Ray."""
    import ray

    docker = config["docker"]
    images = [docker["image"], docker["head_image"], docker["worker_image"]]
    assert all(image.startswith("rayproject/ray:") for image in images)
    assert not any("ray-ml" in image for image in images)
    assert docker["worker_image"].endswith("-gpu")
    assert all(image.split(":")[1].startswith(ray.__version__ + "-") for image in images)


def test_installs_this_package(config: dict) -> None:
    mounts = config["file_mounts"]
    assert "." in mounts.values(), "the repository root is synced to the nodes"
    remote = next(path for path, local in mounts.items() if local == ".")
    remote_name = remote.rstrip("/").split("/")[-1]
    assert any("pip install" in cmd and remote_name in cmd for cmd in config["setup_commands"])
