"""Operator scale benchmark: N LoRAFineTunes applied at once against a real kube-apiserver.

Measures, with the operator (`python -m lft_operator`) running as a subprocess of this script:
- apply -> Job created latency per resource (p50, p99): from just before the create request to the
  arrival of the Job's ADDED event on a watch stream opened before the burst;
- time from the first apply until all N Jobs exist;
- writes per resource seen on a watch of the resources (status changes, and all updates), plus the
  operator's own status-patch counter when its metrics endpoint exposes one;
- peak RSS of the operator's process tree (psutil, polled every 50 ms).
Prints the figures next to the targets (p50 <= 0.5 s, all N within 60 s, RSS <= 200 MB) and exits 1 when
one is missed. Uses its own namespace (the operator watches only it) and deletes it at the end.

    tests/cluster/up.sh --api-only            # etcd + kube-apiserver + kube-controller-manager
    .venv/bin/python bench/operator_scale.py  # --n 200 --json out.json --baseline

--baseline first runs bench/bare_controller.py through the same measurement: the floor that the API
server and the CPU left over by other processes allow at that moment (this machine is shared, and its
load moves the figures by a factor of 2-3), so the operator's figures can be read against it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "operator")]
from lft_api.contract import API_GROUP, API_VERSION, KIND, PLURAL  # noqa: E402 - after the sys.path line

DEFAULT_KUBECONFIG = "/var/lib/lft/cluster/kubeconfig"
TARGET_P50_S, TARGET_ALL_S, TARGET_RSS_MB = 0.5, 60.0, 200.0
SECRET_NAME = "bench-storage"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def finetune(name: str) -> dict:
    """A small valid resource. No node matches its nodeSelector, so its pod stays Pending even on a cluster
    with nodes: the benchmark measures the operator, not training."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "labels": {"bench": "operator-scale"}},
        "spec": {
            "model": {"name": "/opt/lft/models/tiny-phi3", "dtype": "float32"},
            "dataset": {"uri": "/opt/lft/data/chat_tiny.jsonl", "format": "messages"},
            "training": {"maxSteps": 10},
            "output": {"uri": f"s3://lft-bench/{name}"},
            "nodeSelector": {"finetune.dev/bench": "no-such-node"},
        },
    }


@dataclass
class Recorder:
    """What the watch threads see, stamped with time.monotonic() on arrival."""

    job_added: dict[str, float] = field(default_factory=dict)  # owner resource name -> first Job ADDED
    status_changes: dict[str, int] = field(default_factory=dict)
    updates: dict[str, int] = field(default_factory=dict)
    last_status: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_jobs: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)


def watch_jobs(batch: client.BatchV1Api, ns: str, n: int, rec: Recorder, ready: threading.Event) -> None:
    w = watch.Watch()
    rv = batch.list_namespaced_job(ns).metadata.resource_version
    ready.set()
    while not rec.stop.is_set():
        try:
            for ev in w.stream(batch.list_namespaced_job, ns, resource_version=rv, timeout_seconds=5):
                now = time.monotonic()
                job = ev["object"]
                rv = job.metadata.resource_version
                owners = [o.name for o in (job.metadata.owner_references or []) if o.kind == KIND]
                if ev["type"] == "ADDED" and owners:
                    with rec.lock:
                        rec.job_added.setdefault(owners[0], now)
                        if len(rec.job_added) >= n:
                            rec.all_jobs.set()
                if rec.stop.is_set():
                    break
        except ApiException as e:
            if e.status == 410:  # resourceVersion too old: relist (Jobs seen twice keep their first stamp)
                rv = batch.list_namespaced_job(ns).metadata.resource_version
                continue
            rec.errors.append(f"job watch: {e.status} {e.reason}")
            time.sleep(0.5)


def watch_resources(api: client.CustomObjectsApi, ns: str, rec: Recorder, ready: threading.Event) -> None:
    w = watch.Watch()
    rv = api.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["metadata"]["resourceVersion"]
    ready.set()
    while not rec.stop.is_set():
        try:
            for ev in w.stream(
                api.list_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                ns,
                PLURAL,
                resource_version=rv,
                timeout_seconds=5,
            ):
                obj = ev["object"]
                rv = obj["metadata"]["resourceVersion"]
                name = obj["metadata"]["name"]
                status = json.dumps(obj.get("status") or {}, sort_keys=True)
                with rec.lock:
                    if ev["type"] == "MODIFIED":
                        rec.updates[name] = rec.updates.get(name, 0) + 1
                    if ev["type"] in ("ADDED", "MODIFIED") and status != rec.last_status.get(name, "{}"):
                        rec.status_changes[name] = rec.status_changes.get(name, 0) + 1
                    rec.last_status[name] = status
                if rec.stop.is_set():
                    break
        except ApiException as e:
            if e.status == 410:
                rv = api.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["metadata"][
                    "resourceVersion"
                ]
                continue
            rec.errors.append(f"resource watch: {e.status} {e.reason}")
            time.sleep(0.5)


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            time.sleep(self.interval)


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its children."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.NoSuchProcess:
        pass
    return total


def scrape_metrics(url: str, patterns: dict[str, str]) -> dict[str, float | None]:
    """{key: sum of the samples whose metric name matches the regex} from the operator's /metrics
    (None where no sample matches, e.g. the bare controller, which serves none)."""
    try:
        text = urllib.request.urlopen(url, timeout=3).read().decode()
    except OSError:
        text = ""
    sums: dict[str, float | None] = dict.fromkeys(patterns)
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if not m:
            continue
        for key, pattern in patterns.items():
            if re.fullmatch(pattern, m.group(1)):
                sums[key] = (sums[key] or 0.0) + float(m.group(3))
    return sums


def scrape_labelled(url: str, name: str, labels: tuple[str, ...]) -> dict[str, float]:
    """{"label1 label2": value} of one labelled metric of the operator's /metrics ({} when it has none)."""
    try:
        text = urllib.request.urlopen(url, timeout=3).read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{([^}}]*)\}}\s+([0-9.eE+-]+)$", line)
        if not m:
            continue
        values = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = " ".join(values.get(label, "?") for label in labels)
        found[key] = found.get(key, 0.0) + float(m.group(2))
    return found


OPERATOR_COUNTERS = {
    "status_patches": r"\w*status_patch\w*_total",
    "reconciles": r"lft_reconcile_duration_seconds_count",
    "api_requests": r"lft_api_request_duration_seconds_count",
}


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.2)
    return False


def ensure_crds(kubeconfig: str) -> None:
    kubectl = os.environ.get("KUBECTL", "/var/cache/lft/bin/kubectl")
    subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "apply", "-f", str(ROOT / "crds")],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            f"crd/{PLURAL}.{API_GROUP}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def cleanup(core: client.CoreV1Api, api: client.CustomObjectsApi, ns: str, timeout: float = 180) -> None:
    """Delete the namespace; the operator is gone by now, so strip kopf's finalizers first. Waits until it is
    gone: the next run (--baseline) must not compete with its deletion (over 60 s for 200 resources on 1.37)."""
    try:
        items = api.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["items"]
    except ApiException:
        items = []
    for obj in items:
        if obj["metadata"].get("finalizers"):
            try:
                api.patch_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, PLURAL, obj["metadata"]["name"], {"metadata": {"finalizers": None}}
                )
            except ApiException:
                pass
    try:
        core.delete_namespace(ns)
    except ApiException as e:
        if e.status != 404:
            raise
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                print(f"namespace {ns} deleted in {time.monotonic() - started:.0f} s", file=sys.stderr)
                return
        time.sleep(1)
    print(f"warning: namespace {ns} still terminating after {timeout:.0f} s", file=sys.stderr)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="resources applied at once")
    ap.add_argument("--threads", type=int, default=20, help="client threads applying them")
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG))
    ap.add_argument("--timeout", type=float, default=120, help="give up waiting for all Jobs after this")
    ap.add_argument("--settle", type=float, default=5, help="seconds to keep counting writes after the last Job")
    ap.add_argument("--operator-log", default="_out/bench/operator.log")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument(
        "--trace",
        help="write per-resource apply/Job times (time.monotonic, comparable across processes); the baseline's to "
        "this path + .bare",
    )
    ap.add_argument("--keep", action="store_true", help="leave the namespace (debugging)")
    ap.add_argument(
        "--operator-path",
        default=str(ROOT / "operator"),
        help="folder holding the lft_operator package to run (A/B comparisons of a modified copy)",
    )
    ap.add_argument("--profile", help="py-spy the operator during the burst; write this raw (collapsed) profile")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="first run bench/bare_controller.py the same way: the floor the machine allows right now",
    )
    return ap.parse_args()


def start_profiler(pid: int, path: str) -> subprocess.Popen:
    # The venv's py-spy when the venv is not on PATH (else the profile was silently never written).
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", path]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once(
    args: argparse.Namespace,
    command: list[str],
    log_path: str,
    profile: str | None = None,
    trace: str | None = None,
) -> dict:
    """Start the controller (command), apply N resources at once in a fresh namespace, measure, clean up."""
    core, batch, api = client.CoreV1Api(), client.BatchV1Api(), client.CustomObjectsApi()
    ns = f"lft-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    # The operator checks that the storage-credentials Secret exists (it never reads its values).
    core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET_NAME),
            string_data={"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"},
        ),
    )

    metrics_port, liveness_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": args.kubeconfig,
        "PYTHONPATH": os.pathsep.join(
            [p for p in (os.environ.get("LFT_BENCH_PYTHONPATH"), args.operator_path, str(ROOT / "api")) if p]
        ),
        "LFT_NAMESPACES": ns,
        # Its own Lease: a second bench at the same time, or a Lease left by a killed run, never keeps this
        # operator standing by (it would create no Job at all, or only after the lease duration).
        "LFT_LEADER_ELECTION_NAMESPACE": ns,
        "LFT_TRAINER_IMAGE": "lft/trainer:cpu",
        "LFT_TRAINER_IMAGE_PULL_POLICY": "Never",
        "LFT_DEFAULT_STORAGE_ENDPOINT": "http://127.0.0.1:9000",
        "LFT_DEFAULT_STORAGE_SECRET": SECRET_NAME,
        "LFT_METRICS_PORT": str(metrics_port),
        "LFT_LIVENESS_PORT": str(liveness_port),
        "LFT_LOG_LEVEL": "INFO",
    }
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - the controller writes to it until the finally below
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    sampler = RssSampler(proc.pid)
    sampler.start()
    rec = Recorder()
    applied: dict[str, float] = {}
    result: dict = {"n": args.n, "namespace": ns}
    try:
        if not wait_http(f"http://127.0.0.1:{liveness_port}/healthz", proc, timeout=60):
            raise SystemExit(f"{command} not live within 60 s (exit {proc.poll()}); see {log_path}")
        rss_idle = sampler.peak
        jobs_ready, res_ready = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=watch_jobs, args=(batch, ns, args.n, rec, jobs_ready), daemon=True),
            threading.Thread(target=watch_resources, args=(api, ns, rec, res_ready), daemon=True),
        ]
        for t in threads:
            t.start()
        jobs_ready.wait(30)
        res_ready.wait(30)

        names = [f"ft-{i:04d}" for i in range(args.n)]

        def apply(name: str) -> None:
            t0 = time.monotonic()
            api.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, finetune(name))
            applied[name] = t0

        profiler = start_profiler(proc.pid, profile) if profile else None
        cpu_before = tree_cpu_seconds(proc.pid)
        t_start = time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(apply, names))
        t_applied = time.monotonic() - t_start
        rec.all_jobs.wait(args.timeout)
        t_all = time.monotonic() - t_start if rec.all_jobs.is_set() else None
        cpu_burst = tree_cpu_seconds(proc.pid) - cpu_before
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes the profile on SIGINT
            profiler.wait(30)
        time.sleep(args.settle)
        rec.stop.set()

        latencies = [rec.job_added[n] - applied[n] for n in names if n in rec.job_added]
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        counters = scrape_metrics(metrics_url, OPERATOR_COUNTERS)
        by_request = scrape_labelled(metrics_url, "lft_api_requests_total", ("verb", "resource"))
        status_patches = counters["status_patches"]
        with rec.lock:
            changes = [rec.status_changes.get(n, 0) for n in names]
            updates = [rec.updates.get(n, 0) for n in names]
        result.update(
            jobs_created=len(latencies),
            apply_burst_s=round(t_applied, 3),
            latency_p50_s=round(percentile(latencies, 50), 3) if latencies else None,
            latency_p99_s=round(percentile(latencies, 99), 3) if latencies else None,
            latency_max_s=round(max(latencies), 3) if latencies else None,
            all_jobs_s=round(t_all, 2) if t_all is not None else None,
            status_changes_per_resource_mean=round(statistics.mean(changes), 2),
            status_changes_per_resource_max=max(changes),
            updates_per_resource_mean=round(statistics.mean(updates), 2),
            operator_status_patches_total=status_patches,
            operator_status_patches_per_resource=round(status_patches / args.n, 2) if status_patches else None,
            operator_reconciles_per_resource=round(counters["reconciles"] / args.n, 2)
            if counters["reconciles"]
            else None,
            operator_api_requests_per_resource=(
                round(counters["api_requests"] / args.n, 2) if counters["api_requests"] else None
            ),
            operator_api_requests_per_resource_by_request={
                k: round(v / args.n, 2) for k, v in sorted(by_request.items(), key=lambda kv: -kv[1])
            }
            or None,
            operator_cpu_s_until_all_jobs=round(cpu_burst, 2),
            load_average_1m=round(os.getloadavg()[0], 2),
            rss_idle_mb=round(rss_idle / 2**20, 1),
            rss_peak_mb=round(sampler.peak / 2**20, 1),
            watch_errors=rec.errors[:5],
        )
    finally:
        rec.stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        sampler.halt.set()
        log.close()
        if not args.keep:
            cleanup(core, api, ns)
    if trace:
        Path(trace).write_text(json.dumps({"applied": applied, "job_added": rec.job_added}) + "\n")
    return result


def print_result(title: str, result: dict) -> None:
    print(title)
    for key, value in result.items():
        if key != "targets":
            print(f"  {key:40s} {value}")
    for check, verdict in result.get("targets", {}).items():
        print(f"  target {check:33s} {verdict}")


def main() -> int:
    args = parse_args()
    config.load_kube_config(args.kubeconfig)
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = max(args.threads, 4) + 4  # one pooled connection per apply thread
    client.Configuration.set_default(cfg)
    ensure_crds(args.kubeconfig)

    report: dict = {}
    if args.baseline:
        floor = run_once(
            args,
            [sys.executable, str(ROOT / "bench" / "bare_controller.py")],
            args.operator_log + ".bare",
            trace=args.trace and args.trace + ".bare",
        )
        for key in (
            "operator_reconciles_per_resource",
            "operator_api_requests_per_resource",
            "operator_api_requests_per_resource_by_request",
            "operator_status_patches_total",
            "operator_status_patches_per_resource",
            "status_changes_per_resource_mean",
            "status_changes_per_resource_max",
            "updates_per_resource_mean",
        ):
            floor.pop(key, None)  # the bare controller writes no status
        print_result(f"floor: bench/bare_controller.py (children only, no kopf/status/events), N={args.n}", floor)
        report["bare_controller"] = floor

    result = run_once(args, [sys.executable, "-m", "lft_operator"], args.operator_log, args.profile, args.trace)
    t_all = result["all_jobs_s"]
    checks = {
        f"p50 <= {TARGET_P50_S} s": result["latency_p50_s"] is not None and result["latency_p50_s"] <= TARGET_P50_S,
        f"all {args.n} Jobs within {TARGET_ALL_S:.0f} s": t_all is not None and t_all <= TARGET_ALL_S,
        f"peak RSS <= {TARGET_RSS_MB:.0f} MB": result["rss_peak_mb"] <= TARGET_RSS_MB,
    }
    result["targets"] = {k: ("pass" if v else "FAIL") for k, v in checks.items()}
    print_result(
        f"operator scale benchmark: {args.n} LoRAFineTunes applied at once ({args.threads} client threads)", result
    )
    report["operator"] = result
    if args.json:
        Path(args.json).write_text(json.dumps(report if args.baseline else result, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
