"""Entry point: `python -m lft_operator` (settings from the environment, see settings.py)."""

from __future__ import annotations

import argparse
import logging

import kopf

from .settings import Settings


def configure_logging(config: Settings) -> None:
    kopf.configure(
        debug=config.log_level == "DEBUG",
        quiet=config.log_level in ("WARNING", "ERROR", "CRITICAL"),
        log_format=kopf.LogFormat.JSON if config.json_logs else kopf.LogFormat.FULL,
    )
    # aiohttp's chatter and kopf's "Handler ... succeeded" line per watch event (thousands per
    # minute with many resources) stay out of INFO logs; the reconciler logs what it does.
    if config.log_level != "DEBUG":
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lft_operator",
        description="The LoRAFineTune operator. Settings come from LFT_* environment variables (see settings.py).",
    )
    parser.add_argument("--namespace", action="append", default=None, help="watch only this namespace (repeatable)")
    args = parser.parse_args(argv)

    config = Settings.from_env()
    if args.namespace:
        config = config.model_copy(update={"namespaces": tuple(args.namespace)})
    configure_logging(config)

    from . import handlers, kopf_workarounds  # noqa: F401  (registers the kopf handlers)
    if config.kueue:
        from . import kueue_handlers  # noqa: F401  (Workload watch: the kind exists and RBAC allows it)

    kopf_workarounds.install()  # kopf 1.45 defects that leave the operator blind (see there)

    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        # No kopf peering: replicas elect a leader on a Lease (leader.py); kopf only watches.
        standalone=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config),
    )
    return 0
