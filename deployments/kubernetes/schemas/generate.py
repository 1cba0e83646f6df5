#!/usr/bin/env python3
"""Regenerates the JSON schemas deployments/check validates the manifests against (kubeconform's
format: standalone, strict), from sources fetched beside the repository. Not run by the check.

  python3 generate.py SWAGGER_JSON CRD_YAML...

SWAGGER_JSON: Kubernetes' OpenAPI v2 document (kubernetes-client/python's
kubernetes/swagger.json.unprocessed; SOURCES says which version). CRD_YAML: CustomResourceDefinitions
(prometheus-operator's monitoring.coreos.com_podmonitors.yaml, KEDA's keda.sh_scaledobjects.yaml).

As kubeconform's openapi2jsonschema does: references inlined, additionalProperties false on every
object that lists its properties (the root of a CRD's schema too: apiVersion, kind, metadata, spec
and status are all there is; its metadata is checked as ObjectMeta), int-or-string as a string or an integer, a quantity as a string or
a number. Unlike it: descriptions and x- extensions are dropped (the files stay small), and
apiVersion and kind must be the object's. Only the kinds in KINDS are written.
"""
import json
import os
import sys

import yaml

# The built-in kinds the manifests use: (group, version, kind).
KINDS = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Namespace"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("apps", "v1", "Deployment"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
]

OUT = os.path.dirname(os.path.abspath(__file__))


def filename(group, version, kind):
    # kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}: deployment-apps-v1, service-v1.
    suffix = "-" + group.split(".")[0] if group else ""
    return f"{kind.lower()}{suffix}-{version}.json"


def strip(node):
    """Drops descriptions (a string; a property named description is a dict) and x- keys."""
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str)) and not k.startswith("x-")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def strict(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def inline(node, defs, seen=()):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            name = ref.removeprefix("#/definitions/")
            if name in seen:
                # Recursive types (JSONSchemaProps) do not occur in the kinds above.
                raise SystemExit(f"recursive reference {name}")
            return inline(defs[name], defs, seen + (name,))
        return {k: inline(v, defs, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(v, defs, seen) for v in node]
    return node


def pin_kind(schema, group, version, kind):
    api_version = f"{group}/{version}" if group else version
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    return schema


def write(name, schema):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(schema, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print("wrote", name)


def load(swagger):
    with open(swagger) as f:
        return json.load(f)["definitions"]


def core(defs):
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    by_gvk = {}
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            by_gvk[(gvk["group"], gvk["version"], gvk["kind"])] = name
    for gvk in KINDS:
        schema = strict(strip(inline(defs[by_gvk[gvk]], defs)))
        write(filename(*gvk), pin_kind(schema, *gvk))


def crds(path, defs):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition"]
    for crd in docs:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if not v.get("served"):
                continue
            schema = strict(strip(v["schema"]["openAPIV3Schema"]))
            # A CRD's schema leaves metadata open: check it as the built-in kinds' metadata.
            meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            schema["properties"]["metadata"] = strict(strip(inline(defs[meta], defs)))
            write(filename(group, v["name"], kind), pin_kind(schema, group, v["name"], kind))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    definitions = load(sys.argv[1])
    core(definitions)
    for p in sys.argv[2:]:
        crds(p, definitions)
