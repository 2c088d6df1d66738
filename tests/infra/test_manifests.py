"""The Kubernetes manifests of infra/k8s validated offline: core kinds against the Kubernetes schemas of
kubernetes-validate (strict: unknown fields refused), KubeRay RayCluster/RayJob against KubeRay's CRD schema
(vendored in infra/k8s/schemas) with their pod templates against the Kubernetes PodTemplate schema; and the
pieces that must agree with each other (lake volume, service accounts, Ray version, GPU groups) checked."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from speclake.infra.cluster import load_cluster_config
from tests.conftest import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]' (kubernetes-validate)")

K8S = REPO / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
#: Kubernetes version the manifests are checked against.
K8S_VERSION = "1.30.0"
CRD_SCHEMAS = {("ray.io/v1", "RayCluster"): "raycluster-v1.json", ("ray.io/v1", "RayJob"): "rayjob-v1.json"}
POD_TEMPLATE = "x-kubernetes-pod-template"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """``(file:kind/name, object)`` for every object of every YAML file in infra/k8s."""
    return [(f"{p.name}:{d.get('kind')}/{d.get('metadata', {}).get('name')}", d)
            for p in sorted(K8S.glob("*.yaml")) for d in documents(p)]


def _strict(schema: Any) -> Any:
    """A CRD schema that refuses undeclared fields (the API server would drop them silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@lru_cache(maxsize=None)
def crd_schema(name: str) -> dict[str, Any]:
    schema = _strict(json.loads((SCHEMAS / name).read_text()))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the Kubernetes schema below
    return schema


def pod_templates(schema: Any, obj: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, template)`` of every value of ``obj`` that ``schema`` marks as a Kubernetes pod template."""
    if not isinstance(schema, dict) or obj is None:
        return
    if schema.get(POD_TEMPLATE):
        yield path, obj
    elif isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                yield from pod_templates(sub, obj[key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from pod_templates(schema["items"], item, f"{path}[{i}]")


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one manifest object (empty: valid)."""
    import jsonschema

    def k8s(resource: dict[str, Any], where: str) -> list[str]:
        try:
            kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [f"{where}: {exc.message} at {'/'.join(map(str, exc.absolute_path))}"]
        return []

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_SCHEMAS:
        return k8s(obj, "object")
    schema = crd_schema(CRD_SCHEMAS[key])
    errors = [f"CRD schema: {e.message} at {'/'.join(map(str, e.absolute_path))}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
    errors += k8s(meta, "metadata")
    for path, template in pod_templates(schema, obj):
        errors += k8s({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}, path)
    return errors


@pytest.mark.parametrize("name,obj", manifests(), ids=[n for n, _ in manifests()])
def test_manifest_is_valid_against_its_schema(name, obj):
    """Each object of infra/k8s validates: core kinds against Kubernetes 1.30 (strict), KubeRay kinds against
    the vendored CRD schema (undeclared fields refused) with their pod templates against the PodTemplate schema."""
    assert validation_errors(obj) == [], name


def test_the_validator_refuses_broken_manifests():
    """Typos are caught: an undeclared RayCluster field, a misspelt container field inside a worker group's
    pod template, a Deployment without a selector, and a RayJob whose entrypoint is a number."""
    ray_cluster = next(d for _, d in manifests() if d["kind"] == "RayCluster")
    bad = copy.deepcopy(ray_cluster)
    bad["spec"]["workerGroupSpecs"][0]["replica"] = 2
    assert any("replica" in e for e in validation_errors(bad))
    bad = copy.deepcopy(ray_cluster)
    bad["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert any("imagee" in e and "workerGroupSpecs[1].template" in e for e in validation_errors(bad))
    deployment = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "Deployment"))
    del deployment["spec"]["selector"]
    assert any("selector" in e for e in validation_errors(deployment))
    job = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "RayJob"))
    job["spec"]["entrypoint"] = 42
    assert any("entrypoint" in e for e in validation_errors(job))


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind = obj["kind"]
    spec = obj["spec"]
    if kind == "RayJob":
        spec = spec["rayClusterSpec"]
    if kind in ("RayCluster", "RayJob"):
        return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    if kind == "Deployment":
        return [spec["template"]["spec"]]
    return []


def test_every_ray_pod_mounts_the_lake_claim_and_gpu_groups_ask_for_gpus():
    """Every Ray pod mounts the PersistentVolumeClaim of lake-pvc.yaml at /data (where the configs put the lake);
    GPU groups request nvidia.com/gpu, tolerate the GPU taint and give Ray as many GPUs; rayVersion is the
    installed Ray's (the image installs the same)."""
    import ray

    claim = next(d for _, d in manifests() if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    ray_objects = [d for _, d in manifests() if d["kind"] in ("RayCluster", "RayJob")]
    assert {d["kind"] for d in ray_objects} == {"RayCluster", "RayJob"}
    for obj in ray_objects:
        spec = obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]
        assert spec["rayVersion"] == ray.__version__, f"{obj['kind']} rayVersion vs installed Ray"
        for pod in _pod_specs(obj):
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
            assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == claim
        gpu_groups = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
        assert gpu_groups, f"{obj['kind']} has a gpu worker group"
        for group in gpu_groups:
            pod = group["template"]["spec"]
            gpus = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            assert group["rayStartParams"]["num-gpus"] == gpus
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_kubernetes_config_names_the_objects_of_the_manifests():
    """infra/kubernetes.yaml (loaded as a PlatformConfig) points Spark at the manifests' namespace, service
    account and lake claim (mounted at the lake's folder), and Ray at the RayCluster's head service."""
    cfg = load_cluster_config(REPO / "infra" / "kubernetes.yaml", env={})
    conf = cfg.engines.spark_conf
    objects = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    assert cfg.engines.spark_master.startswith("k8s://")
    assert ("Namespace", conf["spark.kubernetes.namespace"]) in objects
    assert ("ServiceAccount", conf["spark.kubernetes.authenticate.driver.serviceAccountName"]) in objects
    assert ("PersistentVolumeClaim", conf["spark.kubernetes.executor.volumes.persistentVolumeClaim.lake.options.claimName"]) in objects
    assert cfg.lake.startswith(conf["spark.kubernetes.executor.volumes.persistentVolumeClaim.lake.mount.path"] + "/")
    head = next(d["metadata"] for _, d in manifests() if d["kind"] == "RayCluster")
    assert cfg.engines.ray_address.startswith(f"{head['name']}-head-svc.{head['namespace']}.")


def test_dockerfile_installs_the_package_as_pyproject_declares():
    """infra/docker/Dockerfile copies every source folder of pyproject's package-dir, pins the same torch as the
    dependencies, installs faiss-gpu through the gpu extra, and .dockerignore keeps the venv and lakes out."""
    import re

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.M))
    assert set(project["tool"]["setuptools"]["package-dir"].values()) <= copied
    torch_pin = next(d.split("==")[1] for d in project["project"]["dependencies"] if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin}" in dockerfile
    assert "gpu" in project["project"]["optional-dependencies"] and 'pip install ".[gpu]"' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "speclake-lake", ".git"} <= set(ignored)
    assert (REPO / "infra" / "docker" / "entrypoint.sh").stat().st_mode & 0o111, "the entrypoint is executable"


#: Sample values for the Prefect base job template's variables without a default (what the worker fills in).
PREFECT_SAMPLE = {"name": "speclake-full", "env": {"PREFECT_API_URL": "http://prefect:4200/api"},
                  "labels": {"app": "speclake"}, "command": "prefect flow-run execute", "cluster_config": None,
                  "job_watch_timeout_seconds": None}


def _fill(template: Any, values: dict[str, Any]) -> Any:
    """A Prefect job template with each ``"{{ var }}"`` replaced by its value (inside strings: by its text)."""
    import re

    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str):
        whole = re.fullmatch(r"\{\{ *(\w+) *\}\}", template)
        if whole:
            return values[whole.group(1)]
        return re.sub(r"\{\{ *(\w+) *\}\}", lambda m: str(values[m.group(1)]), template)
    return template


def test_prefect_base_job_template_makes_a_valid_job_with_the_lake_and_spark_account():
    """The work pool's base job template: every placeholder is a declared variable; filled with the defaults
    (and sample run values) its job manifest is a valid batch/v1 Job (strict) that mounts the lake claim at
    /data, runs as the Spark service account of spark-rbac.yaml and exposes POD_IP for spark.driver.host."""
    import re

    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    declared = template["variables"]["properties"]
    used = set(re.findall(r"\{\{ *(\w+) *\}\}", json.dumps(template["job_configuration"])))
    assert used <= set(declared), f"undeclared variables: {used - set(declared)}"
    values = {k: v["default"] for k, v in declared.items() if "default" in v} | PREFECT_SAMPLE
    values["command"] = values["command"].split()  # the worker passes the command as an argument list
    job = _fill(template["job_configuration"]["job_manifest"], values)
    job["metadata"]["labels"] = values["labels"]
    assert validation_errors(job) == []
    pod = job["spec"]["template"]["spec"]
    objects = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    assert ("ServiceAccount", pod["serviceAccountName"]) in objects
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert ("PersistentVolumeClaim", claim[mounts["/data"]]) in objects
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    cfg = load_cluster_config(REPO / "infra" / "kubernetes.yaml", env={"POD_IP": "10.0.0.7"})
    assert cfg.engines.spark_conf["spark.driver.host"] == "10.0.0.7"
