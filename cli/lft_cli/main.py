"""`kubectl lft` (installed as the kubectl plugin `kubectl-lft`) and `lft`: one program.

    kubectl lft status NAME            phase, progress, eval loss before/after, perplexity, artifacts, conditions
    kubectl lft logs NAME [-f]         the current attempt's trainer pod log
    kubectl lft wait NAME [--timeout]  exit 0 Succeeded, 1 Failed, 2 timed out (the reason is printed)
    kubectl lft plot NAME [FILE]       download loss.png
    kubectl lft pull NAME DIR          download the adapter; written to DIR only if every file matches
                                       status.adapter.files (name, size, sha256)
    kubectl lft samples NAME           held-out prompts: reference, base model's and tuned model's output

-n/--namespace, --context and --kubeconfig work as in kubectl (KUBECONFIG and the current context's
namespace by default). Exit code 3: the command could not run (arguments, no such resource, API or
storage error).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from urllib3.exceptions import HTTPError

from lft_api.contract import TERMINATION_MESSAGE_MAX_BYTES

from . import fetch, render
from .kube import CliError, Cluster, connect
from .render import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT

PROG = "kubectl lft"
PULL_HELP = (
    "Download the adapter into a temporary folder next to DIR, check it, and only then move it into DIR. Every "
    "file is checked against status.adapter.files: the names, sizes and sha256 the trainer reported in its "
    "termination message, which the operator copies into the status (and puts back if another client changes "
    "them), so whoever can write the run's output prefix cannot change them. A file missing, one more file, or "
    "another size or sha256 fails the pull (exit 1, the file named) and DIR is left as it was. Only a resource "
    "without status.adapter.files (an older operator; a result too large for the termination message) is checked "
    "against training_summary.json in the run's storage instead, with a warning: whoever can write the output "
    "prefix can change that file too.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 by default: 2 is wait's timeout here
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _common(defaults: bool) -> _Parser:
    """The kubectl-like flags, accepted before or after the subcommand."""
    p = _Parser(add_help=False)
    keep = None if defaults else argparse.SUPPRESS
    p.add_argument("-n", "--namespace", default=keep, help="namespace (default: the current context's)")
    p.add_argument("--context", default=keep, help="kubeconfig context (default: the current one)")
    p.add_argument("--kubeconfig", default=keep, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, parents=[_common(True)], description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="exit codes: 0 ok (wait: Succeeded), 1 wait: Failed / pull: a file does not match, "
                            "2 wait: timed out, 3 could not run")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    flags = _common(False)
    cmd = sub.add_parser("status", parents=[flags], help="phase, progress, eval before/after, artifacts")
    cmd.add_argument("name")
    cmd = sub.add_parser("logs", parents=[flags], help="the current attempt's trainer pod log")
    cmd.add_argument("name")
    cmd.add_argument("-f", "--follow", action="store_true", help="stream the log until the container ends")
    cmd.add_argument("--tail", type=int, default=None, help="only the last N lines")
    cmd = sub.add_parser("wait", parents=[flags], help="until Succeeded (exit 0) or Failed (1); timeout: 2")
    cmd.add_argument("name")
    cmd.add_argument("--timeout", default="30m", help="give up after this long (90s, 10m, 1h; default 30m)")
    cmd.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    for name, what in (("plot", "download loss.png"), ("pull", "download the adapter, verified file by file"),
                       ("samples", "held-out prompts completed by the base and the tuned model")):
        cmd = sub.add_parser(name, parents=[flags], help=what, description=PULL_HELP if name == "pull" else None)
        cmd.add_argument("name")
        if name == "plot":
            cmd.add_argument("file", nargs="?", help="where to write it (default: NAME-loss.png)")
        elif name == "pull":
            cmd.add_argument("dir", help="directory to download the adapter into (created)")
        else:
            cmd.add_argument("--count", type=int, default=1, help="how many samples to show (default 1)")
        cmd.add_argument("--endpoint-url", help="S3 endpoint as this machine reaches it (default: the run's)")
    return parser


def cmd_status(cluster: Cluster, args: argparse.Namespace) -> int:
    sys.stdout.write(render.format_status(cluster.lft(args.name)))
    return EXIT_OK


def cmd_logs(cluster: Cluster, args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for chunk in cluster.logs(cluster.log_pod(args.name), args.follow, args.tail):
        out.write(chunk)
        out.flush()
    return EXIT_OK


def cmd_wait(cluster: Cluster, args: argparse.Namespace, clock: Callable[[], float] = time.monotonic) -> int:
    try:
        timeout = render.parse_duration(args.timeout)
    except ValueError as exc:
        raise CliError(f"--timeout: {exc}") from exc
    deadline = clock() + timeout
    while True:
        obj = cluster.lft(args.name)
        outcome = render.wait_outcome(obj)
        if outcome is not None:
            print(outcome.message, file=sys.stdout if outcome.code == EXIT_OK else sys.stderr)
            return outcome.code
        left = deadline - clock()
        if left <= 0:
            print(render.timeout_message(obj, timeout), file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(min(args.interval, left))


def _status(cluster: Cluster, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = cluster.lft(name)
    return obj, obj.get("status") or {}


def _artifact(cluster: Cluster, name: str, field: str, missing: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The resource, its status and the URI of one of status.artifacts; CliError with `missing` (formatted with
    the name and the phase) while the run has not written it."""
    obj, status = _status(cluster, name)
    uri = getattr(fetch.artifacts(status), field)
    if not uri:
        raise CliError(missing.format(name=name, phase=status.get("phase") or "not reconciled yet"))
    return obj, status, uri


def cmd_plot(cluster: Cluster, args: argparse.Namespace) -> int:
    obj, status, uri = _artifact(cluster, args.name, "loss_plot", "{name} has no loss.png yet (status.artifacts."
                                 "lossPlot is empty; phase {phase}): it is written at each checkpoint and at the end")
    dest = Path(args.file or f"{args.name}-loss.png")
    store = fetch.run_storage(cluster, obj, args.endpoint_url)
    fetch.download_file(store, uri, dest)
    print(f"{dest} ({dest.stat().st_size} bytes) from {uri}")
    return EXIT_OK


def cmd_pull(cluster: Cluster, args: argparse.Namespace) -> int:
    obj, status = _status(cluster, args.name)
    uri = fetch.adapter_uri(args.name, status)
    dest = Path(args.dir)
    store = fetch.run_storage(cluster, obj, args.endpoint_url)
    manifest = fetch.pull_manifest(args.name, uri, store, status)
    if not manifest.trusted:
        print(f"warning: {fetch.untrusted_warning(args.name, manifest)}", file=sys.stderr)
    try:
        names = fetch.pull_adapter(store, uri, dest, manifest)
    except fetch.Mismatch as exc:
        print(f"error: the adapter at {uri} does not match {manifest.source} ({len(manifest.files)} files listed); "
              f"nothing was written to {dest}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if manifest.trusted and any(p.endswith(f": not in {fetch.STATUS_FILES}") for p in exc.problems):
            print(f"  (the trainer's termination message holds at most {TERMINATION_MESSAGE_MAX_BYTES} bytes: an "
                  f"adapter of more files than fit has a shortened {fetch.STATUS_FILES})", file=sys.stderr)
        return EXIT_FAILED
    print(f"{dest}: {len(names)} files from {uri}; {len(manifest.files)} verified against the sha256 manifest "
          f"({manifest.source})")
    return EXIT_OK


def cmd_samples(cluster: Cluster, args: argparse.Namespace) -> int:
    obj, _, uri = _artifact(cluster, args.name, "samples", "{name} has no samples.jsonl (status.artifacts.samples "
                            "is empty; phase {phase}): written after training when evaluation.samples > 0")
    rows = fetch.read_jsonl(fetch.run_storage(cluster, obj, args.endpoint_url), uri)
    sys.stdout.write(render.format_samples(rows, args.count))
    return EXIT_OK


COMMANDS = {"status": cmd_status, "logs": cmd_logs, "wait": cmd_wait, "plot": cmd_plot, "pull": cmd_pull,
            "samples": cmd_samples}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings; the error below says it once
    try:
        api, namespace = connect(args.kubeconfig, args.context)
        cluster = Cluster(api, args.namespace or namespace)
        return COMMANDS[args.command](cluster, args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (HTTPError, OSError) as exc:  # the API server cannot be reached (refused, TLS, DNS)
        host = getattr(getattr(exc, "pool", None), "host", None)
        print(f"error: cannot reach the Kubernetes API server{f' {host}' if host else ''}: "
              f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lft logs NAME | head`
        return EXIT_OK
