"""training.reportTo from a real trainer pod: a real `mlflow server` (sqlite backend) on the Docker bridge, which
pods reach like the S3 server, gets the run, its parameters and the loss history; TensorBoard event files land in
the bucket; the MLflow credentials (from a Secret) appear nowhere."""

from __future__ import annotations

import json

import pytest

from tests.support.scenarios import BUCKET, finetune, keys_under, output_prefix, wait_phase
from tests.support.tracking import MlflowServer, read_scalars

pytestmark = pytest.mark.e2e

PASSWORD = "mlflow-e2e-password-do-not-leak"


def test_mlflow_and_tensorboard_from_a_pod(kube, s3, s3_endpoint, namespace, bridge_ip, tmp_path):
    server = MlflowServer(tmp_path / "mlflow", host=bridge_ip).start()
    try:
        kube.run("create", "secret", "generic", "mlflow-credentials", "-n", namespace,
                 "--from-literal=MLFLOW_TRACKING_USERNAME=trainer", f"--from-literal=MLFLOW_TRACKING_PASSWORD={PASSWORD}")
        body = finetune(namespace, "tracked", s3_endpoint, max_steps=40)
        body["spec"]["training"].update(
            loggingSteps=5, reportTo=["mlflow", "tensorboard"],
            mlflow={"trackingUri": server.url, "experimentName": namespace,
                    "credentialsSecretRef": {"name": "mlflow-credentials"}})
        kube.apply(body, namespace)
        obj = wait_phase(kube, namespace, "tracked", "Succeeded", timeout=420)

        (run,) = server.runs(namespace)
        assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == f"{namespace}/tracked"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["lft.uid"] == obj["metadata"]["uid"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["max_steps"] == "40"
        loss = server.metric_history(run["info"]["run_id"], "loss")
        assert {5, 10, 40} <= set(loss), sorted(loss)
        assert obj["status"]["artifacts"]["mlflowRun"].endswith(f"/runs/{run['info']['run_id']}")

        prefix = output_prefix(namespace, "tracked") + "/tensorboard/"
        assert obj["status"]["artifacts"]["tensorboard"] == f"s3://{BUCKET}/{prefix.rstrip('/')}"
        for key in keys_under(s3, prefix):
            path = tmp_path / "tb" / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        scalars = read_scalars(tmp_path / "tb")
        assert scalars["train/loss"] == pytest.approx(loss, rel=1e-3)

        described = kube.run("describe", "lft", "tracked", "-n", namespace).stdout
        logs = kube.run("logs", "-n", namespace, "-l", "finetune.dev/name=tracked", "--tail", "-1").stdout
        assert PASSWORD not in json.dumps(obj) + described + logs
    finally:
        server.stop()
