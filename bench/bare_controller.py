"""Calibration for bench/operator_scale.py: the least a controller must do, with nothing else.

Watches LoRAFineTunes in one namespace (LFT_NAMESPACES) and, for each ADDED event, creates the same
children as the operator (ConfigMap, ServiceAccount, Role, RoleBinding, then the Job) with the operator's
own builders and HTTP client: no kopf, no status, no Events, no Job/pod watches, no retries. Its
apply -> Job latency is the floor that the API server, etcd and the CPU left over by other processes
allow at that moment; the operator's figures are read against it. Not an operator: never deploy it.

Serves GET /healthz on LFT_LIVENESS_PORT so the benchmark can wait for it like for the operator.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from lft_operator import builders
from lft_operator.kube import Kube, collection_path
from lft_operator.settings import Settings
from lft_operator.validation import validate


async def create_children(kube: Kube, settings: Settings, body: dict) -> None:
    owner = builders.Owner.from_body(body)
    spec, problems = validate(body["spec"], owner.name)
    if spec is None or problems:
        return
    first = [builders.config_map(owner, spec, settings), builders.service_account(owner), builders.trainer_role(owner)]
    await asyncio.gather(*(kube.create(collection_path(m), m) for m in first))
    # The RoleBinding's escalation check resolves the Role; the pod needs the ServiceAccount.
    binding, job = builders.role_binding(owner, spec), builders.job(owner, spec, settings)
    await asyncio.gather(kube.create(collection_path(binding), binding), kube.create(collection_path(job), job))


async def main() -> None:
    settings = Settings.from_env()
    (namespace,) = settings.namespaces
    kube = Kube.from_environment(connections=64)
    app = web.Application()
    app.router.add_get("/healthz", lambda _: web.json_response({}))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.liveness_port).start()

    tasks: set[asyncio.Task] = set()
    path = f"/apis/finetune.dev/v1alpha1/namespaces/{namespace}/lorafinetunes"
    token = kube._cfg.get_api_key_with_prefix("authorization")
    headers = {"Authorization": token} if token else {}
    session = kube._get_session()
    async with session.get(
        kube._base + path, params={"watch": "1"}, headers=headers, timeout=aiohttp.ClientTimeout(total=None)
    ) as resp:
        async for line in resp.content:
            event = json.loads(line)
            if event["type"] == "ADDED":
                task = asyncio.create_task(create_children(kube, settings, event["object"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main())
