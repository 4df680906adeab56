"""The operator's RBAC table (lft_operator.rbac.USES) against its code: a scan of the package finds every
API call and what it touches, and the table must list exactly those (the kopf rows aside).

The scan reads each call of a Kube method (get, list_items, create, merge_patch, json_patch) and evaluates
its path argument with sample values (an Owner, a spec, Settings; a parameter of the enclosing function
takes the arguments of that function's call sites, e.g. create_or_adopt(builders.job(...))), and reads kopf's
watch decorators (kopf.index, kopf.on.*). A call it cannot evaluate fails the test: new code cannot slip by.
"""

from __future__ import annotations

import ast
import importlib
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lft_api.resource import LoRAFineTuneSpec
from lft_operator import builders, rbac
from lft_operator.settings import Settings

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "lft_operator"
KUBE_VERBS = {"get": "get", "list_items": "list", "create": "create", "replace": "update", "merge_patch": "patch",
              "json_patch": "patch", "delete": "delete"}
SAMPLES: dict[str, Any] = {
    "owner": builders.Owner(name="nm", namespace="ns", uid="u-1"),
    "spec": LoRAFineTuneSpec.model_validate(
        {"model": {"name": "m"}, "dataset": {"uri": "/d.jsonl"}, "output": {"uri": "s3://b/p"}}
    ),
    "settings": Settings(),
    "namespace": "ns",
    "name": "nm",
    "key": ("ns", "nm"),
    "meta": {"namespace": "ns", "name": "nm", "uid": "u-1"},
    "self": SimpleNamespace(settings=Settings()),
    "r": SimpleNamespace(settings=Settings()),  # the Reconciler, in gang_reconcile's functions
    "attempt": 1,
    "service_ip": "10.96.0.10",  # a multi-node run's Service, read back after creating it
}


def api_resource(path: str) -> tuple[str, str, bool]:
    """(API group, resource[/subresource], names one object) of a REST path."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not an API path: {path}")
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    return group, resource, len(rest) > 1


def _call_sites(trees: dict[str, ast.Module], function: str) -> list[tuple[str, ast.Call]]:
    sites = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Attribute) and f.attr == function) or (isinstance(f, ast.Name) and f.id == function):
                    sites.append((module, node))
    return sites


def _enclosing(tree: ast.Module, target: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The innermost function around `target`."""
    around = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
              and any(sub is target for sub in ast.walk(n))]
    return max(around, key=lambda n: n.lineno, default=None)


def _evaluate(expr: ast.expr, module: str, env: dict[str, Any]) -> Any:
    namespace = {**vars(importlib.import_module(f"lft_operator.{module}")), **SAMPLES, **env}
    return eval(compile(ast.Expression(expr), f"<{module}>", "eval"), namespace)  # noqa: S307 - own source


def _self_sample(tree: ast.Module, module: str, call: ast.Call) -> dict[str, Any]:
    """`self` for a call in a method: an instance of its class (not initialised) with sample attributes,
    so that properties such as LeaderElector.path evaluate."""
    around = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and any(s is call for s in ast.walk(n))]
    if not around:
        return {}
    cls = getattr(importlib.import_module(f"lft_operator.{module}"), around[-1].name, None)
    if not isinstance(cls, type):
        return {}
    obj = cls.__new__(cls)
    for attr, value in (("namespace", "ns"), ("name", "nm"), ("settings", SAMPLES["settings"])):
        try:
            setattr(obj, attr, value)
        except AttributeError:  # a property
            pass
    return {"self": obj}


def _environments(trees, module: str, call: ast.Call) -> list[dict[str, Any]]:
    """Values for the enclosing function's parameters, one dict per call site of that function."""
    own = _self_sample(trees[module], module, call)
    return [{**own, **env} for env in _parameter_environments(trees, module, call)]


def _parameter_environments(trees, module: str, call: ast.Call) -> list[dict[str, Any]]:
    fn = _enclosing(trees[module], call)
    params = [a.arg for a in fn.args.args if a.arg != "self"] if fn else []
    used = {n.id for n in ast.walk(call.args[0]) if isinstance(n, ast.Name)}
    forwarded = [p for p in params if p in used and p not in SAMPLES]
    if not forwarded:
        return [{}]
    envs = []
    for site_module, site in _call_sites(trees, fn.name):
        values = [_site_values(trees, site_module, site, site.args[params.index(p)]) for p in forwarded]
        envs += [dict(zip(forwarded, combo, strict=True)) for combo in itertools.product(*values)]
    if not envs:
        raise LookupError(f"no call site of {fn.name} to take {forwarded} from")
    return envs


def _site_values(trees, module: str, site: ast.Call, arg: ast.expr) -> list[Any]:
    """The values an argument takes: evaluated, or, for a loop variable (`for m in builders.jobs(...)`),
    each item of the loop's iterable."""
    try:
        return [_evaluate(arg, module, {})]
    except NameError:
        fn = _enclosing(trees[module], site)
        loops = [n for n in ast.walk(fn) if isinstance(n, (ast.For, ast.AsyncFor))
                 and isinstance(arg, ast.Name) and ast.unparse(n.target) == arg.id] if fn else []
        if not loops:
            raise
        return list(_evaluate(loops[0].iter, module, {}))


def _kopf_watch(decorator: ast.expr, module: str) -> tuple[str, str] | None:
    if not isinstance(decorator, ast.Call):
        return None
    name = ast.unparse(decorator.func)
    if name != "kopf.index" and not name.startswith("kopf.on.") or not decorator.args:
        return None
    args = [_evaluate(a, module, {}) for a in decorator.args]
    group = "" if len(args) == 2 else args[0]
    return group, args[-1]


def scan(sources: dict[str, str]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every API call in the given modules (name -> source)."""
    trees = {m: ast.parse(src) for m, src in sources.items()}
    found: set[tuple[str, str, str]] = set()
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    watch = _kopf_watch(dec, module)
                    if watch is not None:
                        found |= {(*watch, "list"), (*watch, "watch")}
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in KUBE_VERBS or not ast.unparse(node.func.value).endswith("kube"):
                continue
            try:  # the scan must understand every call
                paths = [_evaluate(node.args[0], module, env) for env in _environments(trees, module, node)]
            except Exception as exc:
                pytest.fail(f"{module}.py:{node.lineno}: cannot evaluate {ast.unparse(node)}: {exc!r}")
            for path in paths:
                group, resource, named = api_resource(path)
                verb = KUBE_VERBS[node.func.attr]
                found.add((group, resource, "list" if verb == "get" and not named else verb))
    return found


def package_sources() -> dict[str, str]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        out[".".join(rel.parts)] = path.read_text()
    return out


def test_the_rbac_table_lists_exactly_the_calls_in_the_code() -> None:
    used = scan(package_sources())
    declared = rbac.triples(tuple(u for u in rbac.USES + rbac.LEASE_USES + rbac.KUEUE_USES if u.by == "code"))
    assert used - declared == set(), f"API calls the RBAC table (lft_operator.rbac.USES) lacks: {sorted(used - declared)}"
    assert declared - used == set(), f"rows of the RBAC table no code uses: {sorted(declared - used)}"


def test_every_api_call_goes_through_a_method_the_scan_reads() -> None:
    """The scan sees Kube's methods only: a new one, another HTTP or Kubernetes client, or kopf's API
    helpers would let calls slip by. Extend the scan (KUBE_VERBS) with any of them."""
    import inspect

    from lft_operator.kube import Kube

    methods = {n for n, f in inspect.getmembers(Kube, inspect.isfunction) if not n.startswith("_")}
    assert methods - set(KUBE_VERBS) == {"close", "request"}, sorted(methods - set(KUBE_VERBS))
    for module, source in package_sources().items():
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "request":
                assert module == "kube", f"{module}.py:{node.lineno}: a raw request the scan cannot read"
            if module == "kube":
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("kubernetes", "aiohttp"):
                pytest.fail(f"{module}.py imports from {node.module}: API calls outside Kube")
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
                assert not roots & {"kubernetes", "requests", "httpx", "urllib3"}, f"{module}.py: another API client"
            if isinstance(node, ast.Attribute) and ast.unparse(node) in ("aiohttp.ClientSession", "aiohttp.request"):
                pytest.fail(f"{module}.py:{node.lineno}: HTTP outside Kube")  # aiohttp's exceptions are fine
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list:
                # kopf patches the watched object with what a handler puts in its `patch` argument.
                params = {a.arg for a in node.args.args + node.args.kwonlyargs}
                assert "patch" not in params, f"{module}.py:{node.lineno}: a kopf handler that patches"


def test_kueue_rows_are_read_and_patch_workloads_only() -> None:
    """The Kueue integration's rows (granted only with the chart's kueue.enabled): the operator reads Workloads and
    patches spec.active; it creates, updates and deletes nothing of Kueue's."""
    assert rbac.triples(rbac.KUEUE_USES) == {("kueue.x-k8s.io", "workloads", v) for v in ("list", "watch", "patch")}
    assert not rbac.triples(rbac.KUEUE_USES) & rbac.triples(rbac.USES)


def test_only_kopf_machinery_is_declared_without_code() -> None:
    kopf_rows = {(u.group, u.resource) for u in rbac.USES + rbac.LEASE_USES if u.by != "code"}
    assert kopf_rows == {("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions")}


def test_no_secret_permission_and_a_patch_only_trainer_role() -> None:
    assert not [u for u in rbac.USES + rbac.LEASE_USES if "secrets" in u.resource or u.resource == "*"]
    role = builders.trainer_role(SAMPLES["owner"])
    assert role["rules"] == [{"apiGroups": ["finetune.dev"], "resources": ["lorafinetunes/status"],
                              "resourceNames": ["nm"], "verbs": ["patch"]}]
    # The operator may grant it: it holds the same verbs (RBAC escalation check).
    assert ("finetune.dev", "lorafinetunes/status", "patch") in rbac.triples(rbac.USES)


PLANTED = '''
class R:
    async def check(self, owner):
        await self.kube.get(core_path(owner.namespace, "secrets", "s3"))

    async def _make(self, manifest):
        await self.kube.create(collection_path(manifest), manifest)

    async def run(self, owner, spec):
        await self._make(builders.config_map(owner, spec, self.settings))
        await self.kube.list_items(core_path(owner.namespace, "pods"))

@kopf.on.event("coordination.k8s.io", "v1", "leases")
async def on_lease(**_):
    pass
'''


def test_the_scan_finds_planted_calls() -> None:
    """The scan is what makes the table honest: it sees a Secret read, a forwarded manifest, a watch."""
    found = scan({"children": PLANTED})
    assert found == {("", "secrets", "get"), ("", "configmaps", "create"), ("", "pods", "list"),
                     ("coordination.k8s.io", "leases", "list"), ("coordination.k8s.io", "leases", "watch")}


def test_a_call_the_scan_cannot_read_fails() -> None:
    with pytest.raises(pytest.fail.Exception, match="cannot evaluate"):
        scan({"reconcile": "async def f(self):\n    await self.kube.get(unknown_path('x'))\n"})


@pytest.mark.parametrize(("path", "expected"), [
    ("/api/v1/namespaces/ns/pods", ("", "pods", False)),
    ("/apis/batch/v1/namespaces/ns/jobs/j", ("batch", "jobs", True)),
    ("/apis/finetune.dev/v1alpha1/namespaces/ns/lorafinetunes/x/status", ("finetune.dev", "lorafinetunes/status", True)),
    ("/api/v1/namespaces", ("", "namespaces", False)),
])
def test_api_resource_of_paths(path: str, expected: tuple[str, str, bool]) -> None:
    assert api_resource(path) == expected


def test_the_network_policy_of_a_multinode_run_is_created_and_read_back_only() -> None:
    found = scan(package_sources())
    assert {v for g, r, v in found if (g, r) == ("networking.k8s.io", "networkpolicies")} == {"create", "get"}
    assert {v for g, r, v in rbac.triples(rbac.USES) if (g, r) == ("networking.k8s.io", "networkpolicies")} == {
        "create", "get"}
