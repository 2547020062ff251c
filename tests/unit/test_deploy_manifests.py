"""deploy/ray/*.yaml (KubeRay) validates offline, and describes what the controller needs.

Core Kubernetes kinds are checked against the Kubernetes OpenAPI schemas that kubernetes-validate bundles
(strict: an unknown field is an error), for :data:`KUBERNETES_VERSION`; the RayCluster against KubeRay's CRD
schema vendored in tests/unit/data/ (its header names source, version and license), with its pod templates
and other embedded core types resolved in the same Kubernetes schemas. No cluster, no network.
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
RAY_DIR = ROOT / "deploy" / "ray"
RAYCLUSTER_SCHEMA = Path(__file__).parent / "data" / "kuberay-raycluster-v1.schema.yaml"
# The oldest Kubernetes the manifests are meant for; kubernetes-validate (pinned in the dev extra) bundles it.
KUBERNETES_VERSION = "1.31.0"
K8S_DEFS = "https://kubernetes.io/api/_definitions.json"


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(RAY_DIR.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((f"{path.name}#{i}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return docs


DOCUMENTS = _documents()


def _one(kind: str) -> dict:
    found = [doc for _, doc in DOCUMENTS if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/ray/*.yaml, found {len(found)}"
    return found[0]


def _strict(schema):
    """The schema with ``additionalProperties: false`` wherever an object lists its properties."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def _k8s_registry() -> Registry:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" \
        / f"v{KUBERNETES_VERSION}-local-strict"
    defs = json.loads((folder / "_definitions.json").read_text())
    assert defs["$id"] == K8S_DEFS, defs["$id"]
    return Resource.from_contents(defs) @ Registry()


@lru_cache(maxsize=None)
def _raycluster_validator() -> jsonschema.protocols.Validator:
    schema = _strict(yaml.safe_load(RAYCLUSTER_SCHEMA.read_text()))
    # The API server checks a custom resource's metadata as ObjectMeta whatever its CRD says.
    schema["properties"]["metadata"] = {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_k8s_registry())


def _errors(doc: dict) -> list[str]:
    """Why the API server (with the KubeRay CRD installed) would refuse ``doc``; empty when it would not."""
    if doc.get("kind") == "RayCluster":
        if doc.get("apiVersion") != "ray.io/v1":
            return [f"RayCluster apiVersion {doc.get('apiVersion')!r}: the vendored schema is ray.io/v1"]
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in _raycluster_validator().iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


@pytest.mark.parametrize("doc", [d for _, d in DOCUMENTS], ids=[n for n, _ in DOCUMENTS])
def test_every_document_validates(doc):
    assert _errors(doc) == []


def test_the_documents_are_there():
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == ["PersistentVolumeClaim", "RayCluster", "Service"]


def _copy_at(doc: dict, path: str):
    """A deep copy of ``doc``, the node holding ``path``'s last part in it, and that part.

    ``path``: keys and list indexes, '/'-separated."""
    out = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node = out
    for p in parents:
        node = node[p]
    return out, node, last


def _set(doc: dict, path: str, value) -> dict:
    """A copy of ``doc`` with ``value`` at ``path``."""
    out, node, last = _copy_at(doc, path)
    node[last] = value
    return out


def _rename(doc: dict, path: str, new_key: str) -> dict:
    """A copy of ``doc`` with the key at ``path`` renamed ``new_key`` (its value kept)."""
    out, node, last = _copy_at(doc, path)
    node[new_key] = node.pop(last)
    return out


BROKEN = {
    # misspelt fields, each at a different level of the RayCluster schema
    "raycluster-spec-misspelt": ("RayCluster", lambda d: _rename(d, "spec/enableInTreeAutoscaling",
                                                                  "enableInTreeAutoScaling")),
    "worker-group-misspelt": ("RayCluster", lambda d: _rename(d, "spec/workerGroupSpecs/0/maxReplicas",
                                                               "maxReplica")),
    "head-container-misspelt": ("RayCluster", lambda d: _rename(
        d, "spec/headGroupSpec/template/spec/containers/0/image", "imagee")),
    "raycluster-metadata-misspelt": ("RayCluster", lambda d: _rename(d, "metadata/labels", "lables")),
    # wrong types
    "min-replicas-a-string": ("RayCluster", lambda d: _set(d, "spec/workerGroupSpecs/0/minReplicas", "1")),
    "ray-start-param-a-number": ("RayCluster", lambda d: _set(d, "spec/headGroupSpec/rayStartParams/num-cpus", 0)),
    "upscaling-mode-unknown": ("RayCluster", lambda d: _set(d, "spec/autoscalerOptions/upscalingMode", "Fast")),
    "worker-cpu-limit-a-list": ("RayCluster", lambda d: _set(
        d, "spec/workerGroupSpecs/0/template/spec/containers/0/resources/limits/cpu", ["4"])),
    "missing-required": ("RayCluster", lambda d: _set(d, "spec/workerGroupSpecs/0", {
        k: v for k, v in d["spec"]["workerGroupSpecs"][0].items() if k != "groupName"})),
    "old-api-version": ("RayCluster", lambda d: _set(d, "apiVersion", "ray.io/v1alpha2")),
    "service-port-a-string": ("Service", lambda d: _set(d, "spec/ports/0/port", "fifty")),
    "service-misspelt": ("Service", lambda d: _rename(d, "spec/selector", "selectors")),
    "pvc-misspelt": ("PersistentVolumeClaim", lambda d: _rename(d, "spec/accessModes", "accesModes")),
    "unknown-kind": ("Service", lambda d: _set(d, "kind", "Servise")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_refused(case):
    kind, breaks = BROKEN[case]
    doc = _one(kind)
    assert _errors(doc) == []
    assert _errors(breaks(doc)), f"{case}: accepted"


def test_head_plus_autoscaling_workers():
    spec = _one("RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    # The head runs the controller and takes no Ray tasks: they go to workers, which the autoscaler adds.
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (workers,) = spec["workerGroupSpecs"]
    assert 1 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert workers["maxReplicas"] > workers["minReplicas"]
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"], "Ray takes a worker's num-cpus from its CPU limit"


def test_controller_needs_are_declared():
    """The data dir is the claim, the gRPC Service reaches the head's port, the Secret is the documented one."""
    head = _one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    volumes = {v["name"]: v for v in head["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data/fleetmeter"]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == _one("PersistentVolumeClaim")["metadata"]["name"]

    service = _one("Service")
    assert service["spec"]["selector"] == {"ray.io/cluster": _one("RayCluster")["metadata"]["name"],
                                           "ray.io/node-type": "head"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (grpc,) = service["spec"]["ports"]
    assert grpc["port"] == 50051 and ports[grpc["targetPort"]] == 50051

    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == {"FLEETMETER_AGENT_TOKEN", "FLEETMETER_API_TOKEN"}
    (secret,) = {r["name"] for r in refs.values()}
    readme = (ROOT / "deploy" / "README.md").read_text()
    created = re.search(rf"kubectl create secret generic {secret} \\\n(.*)\n", readme)
    assert created, f"deploy/README.md does not say how to create the Secret {secret}"
    assert set(re.findall(r"--from-literal=([\w-]+)=", created.group(1))) == {r["key"] for r in refs.values()}
