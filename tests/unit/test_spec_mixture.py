"""dataset.mixture in the API: exactly one of uri and mixture (pydantic, CEL, the operator), the items' fields and
what a source inherits from the dataset; a resource without it keeps its wire and its hash. The trainer's side:
tests/unit/trainer/data/test_trainer_mixture.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lft_api.spec import DatasetSpec, TrainerConfig
from lft_operator import crdgen
from lft_operator.validation import validate

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}
MIX = [{"uri": "s3://b/a.jsonl", "weight": 3}, {"uri": "s3://b/b.jsonl", "weight": 1}]


def _dataset_schema() -> dict:
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["dataset"]


def test_unset_mixture_leaves_the_wire_and_the_hash_as_before():
    config = TrainerConfig.model_validate(BASE)
    assert config.dataset.mixture is None and "mixture" not in config.to_wire()["dataset"]
    assert config.result_hash() == "8ed2db1aa7d9d53a"  # the hash of this spec before dataset.mixture existed
    mixed = TrainerConfig.model_validate({**BASE, "dataset": {"mixture": MIX}})
    assert mixed.result_hash() != config.result_hash()
    heavier = TrainerConfig.model_validate({**BASE, "dataset": {"mixture": [{**MIX[0], "weight": 4}, MIX[1]]}})
    assert heavier.result_hash() != mixed.result_hash()


@pytest.mark.parametrize("dataset,message", [
    ({"uri": "d", "mixture": MIX}, "dataset.uri and dataset.mixture are exclusive: set exactly one"),
    ({}, "dataset.uri or dataset.mixture is required: set exactly one"),
    ({"mixture": []}, "at least 1 item"),
    ({"mixture": [{"uri": "a", "weight": 1}] * 17}, "at most 16 items"),
    ({"mixture": [{"uri": "a", "weight": 0}]}, "greater than 0"),
    ({"mixture": [{"uri": "a", "weight": "nan"}]}, "finite number"),
    ({"mixture": [{"uri": "", "weight": 1}]}, "at least 1 character"),  # the same rule as dataset.uri
    ({"mixture": [{"uri": "a"}]}, "weight"),
    ({"mixture": [{"uri": "a", "weight": 1, "split": "x"}]}, "split"),
])
def test_pydantic_refuses(dataset, message):
    with pytest.raises(ValidationError, match=message):
        DatasetSpec.model_validate(dataset)


def test_the_operator_refuses_both_or_neither():
    for dataset in ({"uri": "d", "mixture": MIX}, {}):
        spec, problems = validate({**BASE, "dataset": dataset}, "run")
        assert spec is None and "exactly one" in problems[0].message, problems
    spec, problems = validate({**BASE, "dataset": {"mixture": MIX}}, "run")
    assert spec is not None and not problems


def test_assistant_only_loss_refuses_a_text_source():
    raw = {**BASE, "dataset": {"mixture": [MIX[0], {**MIX[1], "format": "text"}]},
           "training": {"assistantOnlyLoss": True}}
    with pytest.raises(ValidationError, match=r"not dataset.mixture\[1\].format text"):
        TrainerConfig.model_validate(raw)
    raw["dataset"]["mixture"][1]["format"] = "messages"
    assert TrainerConfig.model_validate(raw).training.assistant_only_loss


def test_a_source_inherits_what_it_leaves_unset():
    spec = DatasetSpec.model_validate({
        "mixture": [{"uri": "a", "weight": 1},
                    {"uri": "b", "weight": 2, "format": "prompt-completion", "columns": {"preset": "alpaca"},
                     "config": "c2", "revision": "r2"}],
        "format": "messages", "columns": {"preset": "sharegpt"}, "config": "c", "revision": "r",
        "evalSplit": "test", "evalFraction": 0.1, "maxSamples": 10})
    first, second = spec.sources()
    assert (first.uri, first.format, first.columns.preset, first.config, first.revision) == (
        "a", "messages", "sharegpt", "c", "r")
    assert (second.uri, second.format, second.columns.preset, second.config, second.revision) == (
        "b", "prompt-completion", "alpaca", "c2", "r2")
    for one in (first, second):
        assert (one.mixture, one.max_samples, one.eval_split, one.eval_fraction) == (None, None, "test", 0.1)
    single = DatasetSpec(uri="d")
    assert single.sources() == [single]


def test_the_crd_has_the_rule_and_the_same_uri_schema():
    dataset = _dataset_schema()
    (rule,) = dataset["x-kubernetes-validations"]
    assert rule["rule"] == "has(self.uri) != has(self.mixture)" and "exactly one" in rule["message"]
    assert "required" not in dataset
    mix = dataset["properties"]["mixture"]
    assert (mix["minItems"], mix["maxItems"]) == (1, 16)
    item = mix["items"]
    assert item["required"] == ["uri", "weight"]
    assert item["properties"]["weight"]["exclusiveMinimum"] is True and item["properties"]["weight"]["minimum"] == 0
    uri = {k: v for k, v in dataset["properties"]["uri"].items() if k not in ("nullable", "description")}
    assert uri == {k: v for k, v in item["properties"]["uri"].items() if k != "description"}
    assert item["properties"]["columns"]["properties"] == dataset["properties"]["columns"]["properties"]
