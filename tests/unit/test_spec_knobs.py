"""The fine-tuning knobs in the API (issue #23): typed fields, their refusals in pydantic, as CEL rules of the CRD,
and by the operator; a resource without them keeps its hash. Their wiring to TRL/PEFT:
tests/unit/trainer/run/test_trainer_knobs.py."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from lft_api.spec import BNB_OPTIMIZERS, LoraSpec, TrainerConfig, TrainingSpec
from lft_operator import crdgen
from lft_operator.validation import validate

BASE = {"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "s3://b/p"}}


def _spec_schema() -> dict:
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_defaults_are_unset_and_leave_the_wire_and_the_hash_as_before():
    t, lora = TrainingSpec(), LoraSpec()
    assert (t.optimizer, t.max_grad_norm, t.warmup_steps, t.warmup_ratio, t.min_learning_rate,
            t.neftune_noise_alpha) == (None,) * 6
    assert t.resolved_warmup() == 0.03 and lora.rslora is False and lora.init == "default"
    wire = TrainerConfig.model_validate(BASE).to_wire()
    assert not {"optimizer", "maxGradNorm", "warmupSteps", "minLearningRate", "neftuneNoiseAlpha"} & set(wire["training"])
    plain = TrainerConfig.model_validate(BASE).result_hash()
    assert TrainerConfig.model_validate({**BASE, "training": {"warmupRatio": 0.03}}).result_hash() == plain
    assert TrainerConfig.model_validate({**BASE, "lora": {"rslora": False, "init": "default"}}).result_hash() == plain
    for changed in ({"training": {"optimizer": "sgd"}}, {"training": {"warmupSteps": 5}},
                    {"training": {"maxGradNorm": 0.5}}, {"training": {"minLearningRate": 1e-5}},
                    {"training": {"neftuneNoiseAlpha": 5}}, {"lora": {"rslora": True}}, {"lora": {"init": "gaussian"}},
                    {"lora": {"init": "pissa"}}, {"lora": {"init": "olora"}}):
        assert TrainerConfig.model_validate({**BASE, **changed}).result_hash() != plain, changed


@pytest.mark.parametrize("training,message", [
    ({"warmupSteps": 10, "warmupRatio": 0.1}, "warmupSteps and warmupRatio are exclusive"),
    ({"minLearningRate": 1e-5, "scheduler": "linear"}, "needs scheduler cosine, not linear"),
    ({"minLearningRate": 2e-4}, "must be below learningRate"),
    ({"optimizer": "adamw_xla"}, "optimizer"),
    ({"optimizer": "galore_adamw"}, "optimizer"),  # needs a package the trainer image lacks
    ({"maxGradNorm": -1}, "maxGradNorm"),
    ({"warmupSteps": -1}, "warmupSteps"),
    ({"neftuneNoiseAlpha": 0}, "neftuneNoiseAlpha"),
])
def test_pydantic_refuses(training, message):
    with pytest.raises(ValidationError, match=message):
        TrainingSpec.model_validate(training)


@pytest.mark.parametrize("lora", [{"init": "loftq"}, {"init": "pissa_niter_4"}, {"init": "corda"}, {"rslora": "x"}])
def test_lora_knobs_refuse_what_is_not_offered(lora):
    with pytest.raises(ValidationError):
        LoraSpec.model_validate(lora)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_converted_inits_need_a_plain_unquantized_lora(init):
    assert LoraSpec(init=init, rslora=True).init == init
    with pytest.raises(ValidationError, match=f"init {init} needs quantization none"):
        LoraSpec(init=init, quantization="4bit")
    with pytest.raises(ValidationError, match=f"init {init} cannot be combined with useDora"):
        LoraSpec(init=init, use_dora=True)


def test_model_adapter_is_a_uri_or_a_path_and_excludes_a_new_adapters_init():
    for uri in ("s3://b/run/adapter", "file:///a", "/models/adapter", "gs://b/a"):
        assert TrainerConfig.model_validate({**BASE, "model": {"name": "m", "adapter": uri}}).model.adapter == uri
    with pytest.raises(ValidationError, match="adapter"):
        TrainerConfig.model_validate({**BASE, "model": {"name": "m", "adapter": "org/hub-adapter"}})
    with pytest.raises(ValidationError, match="lora.init .how a new adapter starts. must be default, not pissa"):
        TrainerConfig.model_validate({**BASE, "model": {"name": "m", "adapter": "s3://b/a"}, "lora": {"init": "pissa"}})
    with_adapter = TrainerConfig.model_validate({**BASE, "model": {"name": "m", "adapter": "s3://b/a"}})
    assert with_adapter.result_hash() != TrainerConfig.model_validate(BASE).result_hash()
    assert "adapter" not in TrainerConfig.model_validate(BASE).to_wire()["model"]  # unset: the wire as before


def test_the_crd_types_and_describes_each_knob():
    spec = _spec_schema()
    training, lora = spec["properties"]["training"]["properties"], spec["properties"]["lora"]["properties"]
    assert set(BNB_OPTIMIZERS) < set(training["optimizer"]["enum"]) and "default" not in training["optimizer"]
    assert training["maxGradNorm"]["type"] == "number" and training["maxGradNorm"]["minimum"] == 0
    assert training["warmupSteps"]["type"] == "integer" and "default" not in training["warmupRatio"]
    assert training["neftuneNoiseAlpha"]["type"] == "number"
    assert lora["rslora"] == {"type": "boolean", "default": False, "description": lora["rslora"]["description"]}
    assert lora["init"]["enum"] == ["default", "gaussian", "pissa", "olora"]
    assert "rank 2r" in lora["init"]["description"] and "loftq" in lora["init"]["description"]
    adapter = spec["properties"]["model"]["properties"]["adapter"]
    assert adapter["type"] == "string" and "AdapterNotUsable" in adapter["description"]
    for node in (training["optimizer"], training["maxGradNorm"], training["warmupSteps"], training["minLearningRate"],
                 training["neftuneNoiseAlpha"], lora["rslora"], lora["init"]):
        assert node["description"]


def test_the_crd_refuses_the_cross_field_cases_with_cel():
    spec = _spec_schema()
    training_rules = {r["rule"]: r for r in spec["properties"]["training"]["x-kubernetes-validations"]}
    assert "!has(self.warmupSteps) || !has(self.warmupRatio)" in training_rules
    assert any("self.minLearningRate < self.learningRate" in r for r in training_rules)
    assert any("self.scheduler == 'cosine'" in r for r in training_rules)
    (optimizer,) = [r for r in spec["x-kubernetes-validations"] if r["fieldPath"] == ".training.optimizer"]
    assert "self.resources.gpus >= 1" in optimizer["rule"] and "'paged_adamw_8bit'" in optimizer["rule"]
    assert optimizer["optionalOldSelf"] is True  # ratchets, as the QLoRA rule does


@pytest.mark.parametrize("name", BNB_OPTIMIZERS)
def test_the_operator_refuses_a_bitsandbytes_optimizer_without_a_gpu(name):
    _, problems = validate({**BASE, "training": {"optimizer": name}}, "run")
    assert [p.reason for p in problems] == ["OptimizerNeedsGPU"]
    assert f"spec.training.optimizer {name} (bitsandbytes) needs a GPU" in problems[0].message
    _, problems = validate({**BASE, "training": {"optimizer": name}, "resources": {"gpus": 1}}, "run")
    assert problems == []


def test_the_operator_accepts_the_torch_optimizers_on_cpu():
    for name in ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd"):
        assert validate({**BASE, "training": {"optimizer": name}}, "run")[1] == []


# --- training.earlyStopping and training.extra ------------------------------------------------------------------
def test_early_stopping_and_extra_unset_leave_the_wire_and_the_hash_as_before():
    plain = TrainerConfig.model_validate(BASE)
    assert plain.training.early_stopping is None and plain.training.extra is None
    assert not {"earlyStopping", "extra"} & set(plain.to_wire()["training"])
    with_eval = {**BASE, "training": {"evalSteps": 5}}
    before = TrainerConfig.model_validate(with_eval).result_hash()
    for changed in ({"earlyStopping": {"patience": 2}}, {"extra": {"adam_beta2": "0.95"}}):
        c = TrainerConfig.model_validate({**BASE, "training": {"evalSteps": 5, **changed}})
        assert c.result_hash() != before, changed


@pytest.mark.parametrize("spec,message", [
    ({"training": {"earlyStopping": {"patience": 2}}}, "training.earlyStopping needs evaluation: set training.evalSteps"),
    ({"training": {"earlyStopping": {"patience": 2}, "evalSteps": 5}, "dataset": {"uri": "d", "evalFraction": 0}},
     "set an eval set \\(dataset.evalSplit, or dataset.evalFraction above 0\\)"),
    ({"training": {"earlyStopping": {}, "evalSteps": 5}}, "patience"),
    ({"training": {"earlyStopping": {"patience": 0}, "evalSteps": 5}}, "patience"),
    ({"training": {"earlyStopping": {"patience": 1, "threshold": -1}, "evalSteps": 5}}, "threshold"),
])
def test_early_stopping_needs_evaluation(spec, message):
    with pytest.raises(ValidationError, match=message):
        TrainerConfig.model_validate({**BASE, **spec})
    assert validate({**BASE, **spec}, "run")[1]  # the operator's second line


def test_early_stopping_with_evaluation_is_accepted():
    for dataset in ({"uri": "d"}, {"uri": "d", "evalSplit": "test", "evalFraction": 0}):
        c = TrainerConfig.model_validate({**BASE, "dataset": dataset,
                                          "training": {"earlyStopping": {"patience": 3}, "evalSteps": 10}})
        assert (c.training.early_stopping.patience, c.training.early_stopping.threshold) == (3, 0.0)


@pytest.mark.parametrize("key,says", [
    ("learning_rate", "training.extra.learning_rate: use training.learningRate instead"),
    ("save_steps", "training.extra.save_steps: use checkpointing.everySteps instead"),
    ("r", "training.extra.r: use lora.r instead"),
    ("output_dir", "training.extra.output_dir: set by the operator"),
    ("hub_model_id", "training.extra.hub_model_id: set by the operator"),
    ("push_to_hub", "training.extra.push_to_hub: set by the operator"),
    ("deepspeed", "training.extra.deepspeed: set by the operator"),
    ("fsdp_config", "training.extra.fsdp_config: set by the operator"),
    ("local_rank", "training.extra.local_rank: set by the operator"),
    ("resume_from_checkpoint", "training.extra.resume_from_checkpoint: set by the operator"),
])
def test_extra_refuses_the_keys_the_run_owns(key, says):
    with pytest.raises(ValidationError, match=says):
        TrainingSpec.model_validate({"extra": {key: "1", "adam_beta2": "0.9"}})
    _, problems = validate({**BASE, "training": {"extra": {key: "1"}}}, "run")
    assert problems and says in problems[0].message


def test_extra_takes_other_keys_as_strings_only():
    assert TrainingSpec.model_validate({"extra": {"adam_beta2": "0.95"}}).extra == {"adam_beta2": "0.95"}
    with pytest.raises(ValidationError, match="extra.adam_beta2"):
        TrainingSpec.model_validate({"extra": {"adam_beta2": 0.95}})  # the CRD's type: string
    with pytest.raises(ValidationError, match="extra"):
        TrainingSpec.model_validate({"extra": {f"k{i}": "1" for i in range(33)}})


def test_the_crd_types_extra_as_a_bounded_string_map_with_the_owned_keys_refused_by_cel():
    from lft_api.training_knobs import OPERATOR_EXTRA_KEYS, OPERATOR_EXTRA_PREFIXES, TYPED_EXTRA_KEYS

    training = _spec_schema()["properties"]["training"]["properties"]
    extra = training["extra"]
    assert extra["type"] == "object" and extra["maxProperties"] == 32
    assert extra["additionalProperties"] == {"type": "string", "maxLength": 4096}
    assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(extra)
    exact, prefixed = extra["x-kubernetes-validations"]
    for key, field in TYPED_EXTRA_KEYS.items():
        assert f"'{key}': 'use {field} instead'" in exact["rule"] and exact["rule"].startswith("self.all(k, !(k in {")
    for key in OPERATOR_EXTRA_KEYS:
        assert f"'{key}': 'set by the operator, not settable'" in exact["rule"]
    # No messageExpression naming the keys: a real API server (1.37) refused the CRD for its estimated cost (over
    # 100x the budget: map keys have no length bound); the static message points to the list.
    assert "messageExpression" not in exact and "messageExpression" not in prefixed
    assert "docs/knobs.md" in exact["message"]
    assert all(f"'{p}'" in prefixed["rule"] for p in OPERATOR_EXTRA_PREFIXES)
    assert "k.startsWith(p)" in prefixed["rule"]
    stopping = training["earlyStopping"]
    assert stopping["required"] == ["patience"] and stopping["properties"]["patience"]["minimum"] == 1
    (rule,) = [r for r in _spec_schema()["x-kubernetes-validations"] if r["fieldPath"] == ".training.earlyStopping"]
    assert "self.dataset.evalFraction > 0.0" in rule["rule"] and rule["optionalOldSelf"] is True
