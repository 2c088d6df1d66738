"""Write raycluster-v1.json and rayjob-v1.json from KubeRay's CRDs (see README.md beside this file).

    python infra/k8s/schemas/vendor_kuberay_crds.py path/to/kuberay/ray-operator/config/crd/bases

The ``v1`` OpenAPI schema of each CRD with the descriptions and ``status`` dropped, and every embedded
PodTemplateSpec replaced by ``{"type": "object", "x-kubernetes-pod-template": true}``: the manifest test
validates those against the Kubernetes schema itself (kubernetes-validate), which keeps these files small.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = {"ray.io_rayclusters.yaml": "raycluster-v1.json", "ray.io_rayjobs.yaml": "rayjob-v1.json"}


def is_pod_template(schema: Any) -> bool:
    """An object schema with ``metadata`` and a ``spec`` holding ``containers``: a core/v1 PodTemplateSpec."""
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return {"metadata", "spec"} <= set(props) and "containers" in props["spec"].get("properties", {})


def trim(schema: Any) -> Any:
    """The schema without descriptions, pod templates replaced by the marker."""
    if isinstance(schema, dict):
        if is_pod_template(schema):
            return {"type": "object", "x-kubernetes-pod-template": True}
        return {k: trim(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [trim(v) for v in schema]
    return schema


def main(crd_dir: str) -> None:
    for crd_file, out in CRDS.items():
        crd = yaml.safe_load((Path(crd_dir) / crd_file).read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = version["schema"]["openAPIV3Schema"]
        schema["properties"].pop("status", None)
        (Path(__file__).parent / out).write_text(json.dumps(trim(schema), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
