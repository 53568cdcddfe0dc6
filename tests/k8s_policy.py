"""Checks of rendered Kubernetes objects: security, resources, secrets, RBAC and
the names objects use to refer to one another. Each check returns a list of
problems, one line each, naming the object; an empty list means it passes.
"""

from __future__ import annotations

import re

import yaml

WORKLOAD_TEMPLATE = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"),
                     "DaemonSet": ("spec", "template"), "Job": ("spec", "template"),
                     "CronJob": ("spec", "jobTemplate", "spec", "template")}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|(^|_)KEY$)", re.IGNORECASE)
RESOURCES = ("cpu", "memory")


def describe(obj: dict) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name', '?')}"


def embedded_pods(obj: dict) -> list[dict]:
    """Pods held as YAML text in a ConfigMap (Spark executor pod templates)."""
    if obj.get("kind") != "ConfigMap":
        return []
    pods = []
    for key, text in (obj.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")):
            doc = yaml.safe_load(text)
            if isinstance(doc, dict) and doc.get("kind") == "Pod":
                doc.setdefault("metadata", {}).setdefault("name", f"{obj['metadata']['name']}:{key}")
                pods.append(doc)
    return pods


def pod_templates(objects: list[dict]) -> list[tuple[dict, str, dict]]:
    """(owner, where, pod template) for every workload, Pod and embedded pod
    template: the template is a dict with ``metadata`` and ``spec``. An embedded
    template runs in its ConfigMap's namespace (Spark's driver's)."""
    found = []
    for obj in objects:
        if obj.get("kind") == "Pod":
            found.append((obj, describe(obj), obj))
        elif obj.get("kind") in WORKLOAD_TEMPLATE:
            template = obj
            for step in WORKLOAD_TEMPLATE[obj["kind"]]:
                template = template.get(step, {})
            found.append((obj, describe(obj), template))
        for pod in embedded_pods(obj):
            found.append((obj, f"{describe(obj)} (pod template {pod['metadata']['name']})", pod))
    return found


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


# --- security ---------------------------------------------------------------

def security_problems(objects: list[dict], assigned_uid: bool) -> list[str]:
    """Restricted-SCC / restricted Pod Security rules. With ``assigned_uid``
    (OpenShift), pods must not pick a UID, GID or fsGroup: the SCC assigns them
    from the project's range and rejects others."""
    problems = []
    for _, where, template in pod_templates(objects):
        spec = template.get("spec", {})
        pod_sc = spec.get("securityContext", {}) or {}
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{where}: uses the host's network, PID or IPC namespace")
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{where}: mounts a hostPath volume")
        if assigned_uid:
            for field in ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"):
                if field in pod_sc:
                    problems.append(f"{where}: sets securityContext.{field}, which the SCC assigns")
        for container in containers(spec):
            sc = container.get("securityContext", {}) or {}
            name = f"{where} container {container.get('name')}"
            if sc.get("privileged"):
                problems.append(f"{name}: privileged")
            for level, context in (("pod", pod_sc), ("container", sc)):
                if context.get("runAsUser") == 0:
                    problems.append(f"{name}: {level} runAsUser is 0 (root)")
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
                problems.append(f"{name}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation", True):
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            caps = sc.get("capabilities", {}) or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{name}: does not drop ALL capabilities")
            if caps.get("add"):
                problems.append(f"{name}: adds capabilities {caps['add']}")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            if assigned_uid and ("runAsUser" in sc or "runAsGroup" in sc):
                problems.append(f"{name}: sets a UID or GID, which the SCC assigns")
    return problems


def resource_problems(objects: list[dict]) -> list[str]:
    problems = []
    for _, where, template in pod_templates(objects):
        for container in containers(template.get("spec", {})):
            res = container.get("resources", {}) or {}
            for kind in ("requests", "limits"):
                missing = [r for r in RESOURCES if r not in (res.get(kind) or {})]
                if missing:
                    problems.append(f"{where} container {container.get('name')}: no {kind} for {missing}")
    return problems


def probe_problems(objects: list[dict]) -> list[str]:
    """Every long-running container has a liveness probe, and one behind a
    Service a readiness probe too (so it gets traffic only when it answers)."""
    problems = []
    selectors = [(o["metadata"].get("namespace"), o["spec"].get("selector") or {})
                 for o in objects if o.get("kind") == "Service"]
    for owner, where, template in pod_templates(objects):
        if owner.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        labels = (template.get("metadata") or {}).get("labels") or {}
        served = any(ns == owner["metadata"].get("namespace") and sel and sel.items() <= labels.items()
                     for ns, sel in selectors)
        for container in template.get("spec", {}).get("containers", []):
            if "livenessProbe" not in container:
                problems.append(f"{where} container {container.get('name')}: no livenessProbe")
            if served and "readinessProbe" not in container:
                problems.append(f"{where} container {container.get('name')}: behind a Service, no readinessProbe")
    return problems


# --- secrets ----------------------------------------------------------------

def secret_problems(objects: list[dict]) -> list[str]:
    """No credential in plain sight: no Secret object in the manifests (it is
    created on the cluster), no secret-like env var with a literal value, no
    secret-like key in a ConfigMap."""
    problems = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            problems.append(f"{describe(obj)}: a Secret in the manifests puts its values in the repository")
        if obj.get("kind") == "ConfigMap":
            for key in (obj.get("data") or {}):
                if SECRET_NAME.search(key):
                    problems.append(f"{describe(obj)}: key {key} looks like a credential in a ConfigMap")
    for _, where, template in pod_templates(objects):
        for container in containers(template.get("spec", {})):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and "value" in env:
                    problems.append(f"{where} container {container.get('name')}: {env['name']} "
                                    "has a literal value; use valueFrom.secretKeyRef")
    return problems


# --- RBAC -------------------------------------------------------------------

def rbac_problems(objects: list[dict], allowed: dict[str, dict[tuple[str, str], set[str]]]) -> list[str]:
    """Every rule of every Role is within ``allowed[role][(apiGroup, resource)]``;
    no wildcards, no ClusterRole or ClusterRoleBinding, no unknown Role."""
    problems = []
    for obj in objects:
        kind = obj.get("kind")
        if kind in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{describe(obj)}: cluster-wide RBAC is not needed")
        if kind != "Role":
            continue
        name = obj["metadata"]["name"]
        if name not in allowed:
            problems.append(f"{describe(obj)}: no allowance declared for this Role")
            continue
        for rule in obj.get("rules", []):
            if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                problems.append(f"{describe(obj)}: resourceNames/nonResourceURLs are not expected")
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    verbs = set(rule.get("verbs", []))
                    if "*" in verbs or group == "*" or resource == "*":
                        problems.append(f"{describe(obj)}: wildcard in {group}/{resource} {sorted(verbs)}")
                        continue
                    extra = verbs - allowed[name].get((group, resource), set())
                    if extra:
                        problems.append(f"{describe(obj)}: {group or 'core'}/{resource} verbs "
                                        f"{sorted(extra)} are wider than needed")
    return problems


# --- references between objects ---------------------------------------------

def _index(objects: list[dict]) -> dict[tuple[str, str | None, str], dict]:
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}


def reference_problems(objects: list[dict]) -> list[str]:
    """Names that one object uses for another: Service selectors and ports,
    Route and Ingress backends, claims, ConfigMaps, volume mounts, service
    accounts, role bindings."""
    problems = []
    index = _index(objects)

    def exists(kind: str, namespace: str | None, name: str) -> bool:
        return (kind, namespace, name) in index

    workloads = [(o, t) for o, _, t in pod_templates(objects) if o.get("kind") in WORKLOAD_TEMPLATE]
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        kind = obj.get("kind")
        if kind == "Service":
            selector = obj["spec"].get("selector") or {}
            pods = [(o, t) for o, t in workloads if o["metadata"].get("namespace") == ns
                    and selector and selector.items() <= (t.get("metadata", {}).get("labels") or {}).items()]
            if not pods:
                problems.append(f"{describe(obj)}: selector {selector} matches no pod template")
            for port in obj["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                for o, t in pods:
                    ports = [p for c in t["spec"].get("containers", []) for p in c.get("ports", [])]
                    if not any(p.get("name") == target or p.get("containerPort") == target for p in ports):
                        problems.append(f"{describe(obj)}: targetPort {target} is not a port of {describe(o)}")
        if kind == "Route":
            to = obj["spec"]["to"]
            service = index.get(("Service", ns, to["name"]))
            if to.get("kind", "Service") != "Service" or service is None:
                problems.append(f"{describe(obj)}: routes to missing Service {to['name']}")
            elif "port" in obj["spec"]:
                target = obj["spec"]["port"]["targetPort"]
                if not any(target in (p.get("name"), p.get("targetPort"), p["port"])
                           for p in service["spec"]["ports"]):
                    problems.append(f"{describe(obj)}: port {target} is not a port of {describe(service)}")
        if kind == "Ingress":
            for rule in obj["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    service = index.get(("Service", ns, backend["name"]))
                    if service is None:
                        problems.append(f"{describe(obj)}: backend Service {backend['name']} is missing")
                        continue
                    port = backend["port"]
                    if not any(p.get("name") == port.get("name") or p["port"] == port.get("number")
                               for p in service["spec"]["ports"]):
                        problems.append(f"{describe(obj)}: backend port {port} is not a port of {describe(service)}")
        if kind == "RoleBinding":
            role = obj["roleRef"]
            if not exists(role["kind"], ns if role["kind"] == "Role" else None, role["name"]):
                problems.append(f"{describe(obj)}: roleRef {role['kind']} {role['name']} is missing")
            for subject in obj.get("subjects", []):
                if subject["kind"] != "ServiceAccount":
                    continue
                if subject.get("namespace") != ns:
                    problems.append(f"{describe(obj)}: subject {subject['name']} is in namespace "
                                    f"{subject.get('namespace')}, not {ns}")
                if subject["name"] != "default" and not exists("ServiceAccount", ns, subject["name"]):
                    problems.append(f"{describe(obj)}: ServiceAccount {subject['name']} is missing")
    for owner, where, template in pod_templates(objects):
        problems += _pod_reference_problems(where, template, owner["metadata"].get("namespace"), index)
    return problems


def _pod_reference_problems(where: str, template: dict, ns: str | None, index: dict) -> list[str]:
    problems = []
    spec = template.get("spec", {})
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for volume in volumes.values():
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        if claim and ("PersistentVolumeClaim", ns, claim) not in index:
            problems.append(f"{where}: volume {volume['name']} claims missing PVC {claim}")
        config = volume.get("configMap", {}).get("name")
        if config and ("ConfigMap", ns, config) not in index:
            problems.append(f"{where}: volume {volume['name']} uses missing ConfigMap {config}")
    account = spec.get("serviceAccountName")
    if account and account != "default" and ("ServiceAccount", ns, account) not in index:
        problems.append(f"{where}: serviceAccountName {account} is missing")
    for container in containers(spec):
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{where} container {container['name']}: mounts undefined volume {mount['name']}")
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref and ("ConfigMap", ns, ref) not in index:
                problems.append(f"{where} container {container['name']}: envFrom missing ConfigMap {ref}")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = ((container.get(probe) or {}).get("httpGet") or (container.get(probe) or {}).get("tcpSocket") or {}).get("port")
            if isinstance(port, str) and port not in {p.get("name") for p in container.get("ports", [])}:
                problems.append(f"{where} container {container['name']}: {probe} uses unnamed port {port}")
    return problems


def secret_refs(objects: list[dict]) -> dict[str, set[str]]:
    """Secret name → keys that pods read from it (the Secret is created on the cluster)."""
    refs: dict[str, set[str]] = {}
    for _, _, template in pod_templates(objects):
        for container in containers(template.get("spec", {})):
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs
