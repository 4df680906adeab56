"""model.adapter: a second training starts from the first one's adapter (the same weights, the same loss), and each
way an adapter cannot be continued is refused in pre-flight or at loading with AdapterNotUsable, naming why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lft_api.spec import TrainerConfig
from lft_trainer.errors import InvalidInput
from lft_trainer.model import adapters
from lft_trainer.model import loading as model
from tests.unit.trainer.model.conftest import batch, train_steps


def cfg(tiny, adapter: str | None = None, **lora) -> TrainerConfig:
    m = {"name": str(tiny), **({"adapter": adapter} if adapter else {})}
    return TrainerConfig(model=m, dataset={"uri": "d"}, output={"uri": "/tmp/out"},
                         lora={"dropout": 0.0, **lora})


def load_base(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny)


def loss(m, ids) -> float:
    import torch

    m.eval()
    with torch.no_grad():
        return float(m(input_ids=ids, labels=ids).loss)


@pytest.fixture(scope="module")
def first(tiny, tmp_path_factory) -> tuple[Path, float]:
    """A trained tiny adapter (r 4, alpha 8, q/o projections), saved as a run publishes it; its final loss."""
    ids = batch()
    peft_model = model.with_lora(cfg(tiny, r=4, alpha=8, targetModules=["qkv_proj", "o_proj"]), load_base(tiny))
    train_steps(peft_model, ids, steps=4)
    out = tmp_path_factory.mktemp("first") / "adapter"
    peft_model.save_pretrained(str(out))
    return out, loss(peft_model, ids)


def test_a_second_training_starts_where_the_first_ended(tiny, first, tmp_path):
    adapter_dir, final_loss = first
    config = cfg(tiny, adapter=str(adapter_dir))
    saved = adapters.check_source(config)  # pre-flight
    assert saved["r"] == 4 and adapters.local_dir(config, tmp_path) == adapter_dir
    ids = batch()
    fresh_base = load_base(tiny)
    base_loss = loss(fresh_base, ids)
    second = model.with_lora(config, fresh_base, adapters.local_dir(config, tmp_path))
    assert loss(second, ids) == pytest.approx(final_loss, abs=1e-6) and abs(final_loss - base_loss) > 1e-3
    conf = second.peft_config["default"]
    assert (conf.r, conf.lora_alpha, sorted(conf.target_modules)) == (4, 8, ["o_proj", "qkv_proj"])  # the adapter's
    trainable = [n for n, p in second.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # is_trainable: it trains on
    train_steps(second, ids, steps=2)
    assert loss(second, ids) < final_loss


def test_a_remote_adapter_is_downloaded_once(tiny, first, tmp_path, monkeypatch):
    adapter_dir, _ = first
    calls = []

    class FakeStorage:
        def __init__(self, uri, spec=None):
            assert uri == "s3://bucket/run/adapter"

        def download_dir(self, rel, dest):
            calls.append(rel)
            import shutil

            shutil.copytree(adapter_dir, dest)
            return dest

    monkeypatch.setattr(adapters, "Storage", FakeStorage)
    config = cfg(tiny, adapter="s3://bucket/run/adapter")
    assert adapters.local_dir(config, tmp_path) == tmp_path / adapters.START_ADAPTER_DIR
    assert adapters.local_dir(config, tmp_path) == tmp_path / adapters.START_ADAPTER_DIR
    assert calls == [""] and (tmp_path / adapters.START_ADAPTER_DIR / "adapter_config.json").is_file()


def copy_with(src: Path, dest: Path, **changes) -> Path:
    import shutil

    shutil.copytree(src, dest)
    path = dest / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return dest


def refused(config: TrainerConfig, call=None) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        (call or adapters.check_source)(config)
    assert exc.value.reason == "AdapterNotUsable"
    return exc.value


def test_refused_when_there_is_no_adapter(tiny, tmp_path):
    err = refused(cfg(tiny, adapter=str(tmp_path / "missing")))
    assert err.message.endswith("directory does not exist") and err.field == "model.adapter"
    (tmp_path / "empty").mkdir()
    assert "no adapter_config.json there" in refused(cfg(tiny, adapter=str(tmp_path / "empty"))).message
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("{not json")
    assert "adapter_config.json is not valid JSON" in refused(cfg(tiny, adapter=str(tmp_path / "bad"))).message


def test_refused_without_weights(tiny, first, tmp_path):
    d = copy_with(first[0], tmp_path / "a")
    (d / "adapter_model.safetensors").unlink()
    assert "no adapter weights (adapter_model.safetensors or adapter_model.bin)" in refused(
        cfg(tiny, adapter=str(d))).message


def test_refused_when_not_lora(tiny, first, tmp_path):
    d = copy_with(first[0], tmp_path / "a", peft_type="IA3")
    assert "peft_type is 'IA3' in adapter_config.json, not LORA" in refused(cfg(tiny, adapter=str(d))).message


def test_refused_when_trained_on_a_decomposed_base(tiny, first, tmp_path):
    d = copy_with(first[0], tmp_path / "a", init_lora_weights="pissa")
    assert "fits a base model with modified weights" in refused(cfg(tiny, adapter=str(d))).message


@pytest.mark.parametrize("lora,field,theirs", [
    ({"r": 8}, "lora.r", "r 4"), ({"alpha": 16}, "lora.alpha", "lora_alpha 8"),
    ({"targetModules": ["down_proj"]}, "lora.targetModules", "target_modules ['o_proj', 'qkv_proj']"),
    ({"useDora": True}, "lora.useDora", "use_dora False"), ({"rslora": True}, "lora.rslora", "use_rslora False"),
])
def test_refused_when_a_lora_setting_differs_from_the_adapter(tiny, first, lora, field, theirs):
    err = refused(cfg(tiny, adapter=str(first[0]), **lora))
    assert err.field == field and f"but the adapter has {theirs}" in err.message
    assert f"leave {field} at its default to take the adapter's value" in err.message


def test_lora_settings_equal_to_the_adapters_are_accepted(tiny, first):
    adapters.check_source(cfg(tiny, adapter=str(first[0]), r=4, alpha=8, targetModules=["o_proj", "qkv_proj"]))


def test_another_base_model_name_is_a_warning(tiny, first, tmp_path, caplog):
    d = copy_with(first[0], tmp_path / "a", base_model_name_or_path="microsoft/Phi-3-mini-4k-instruct")
    with caplog.at_level(logging.WARNING, logger="lft_trainer"):
        adapters.check_source(cfg(tiny, adapter=str(d)))
    assert "was trained on base model 'microsoft/Phi-3-mini-4k-instruct'" in caplog.text


def test_refused_when_its_target_modules_are_not_in_the_model(tiny, first, tmp_path):
    d = copy_with(first[0], tmp_path / "a", target_modules=["q_proj", "v_proj"])
    config = cfg(tiny, adapter=str(d))
    err = refused(config, lambda c: model.with_lora(c, load_base(tiny), d))
    assert "its target modules q_proj, v_proj are not modules of the phi3 model" in err.message


def test_refused_when_its_weights_do_not_fit(tiny, first, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    d = copy_with(first[0], tmp_path / "a")
    weights = load_file(d / "adapter_model.safetensors")
    save_file({k: torch.zeros(v.shape[0], v.shape[1] + 1) for k, v in weights.items()}, d / "adapter_model.safetensors")
    err = refused(cfg(tiny, adapter=str(d)), lambda c: model.with_lora(c, load_base(tiny), d))
    assert "its weights do not fit the model" in err.message


def test_preflight_refuses_the_adapter_before_reading_the_dataset(tiny, tmp_path):
    from lft_api.contract import RunIdentity
    from lft_trainer.run import preflight

    config = TrainerConfig.model_validate({"model": {"name": str(tiny), "adapter": str(tmp_path / "no-adapter")},
                                           "dataset": {"uri": str(tmp_path / "no-data.jsonl")},
                                           "output": {"uri": str(tmp_path / "out")}})
    with pytest.raises(InvalidInput) as err:  # not DatasetNotFound: the adapter is checked first
        preflight.run_checks(config, tmp_path / "work", cuda=False, identity=RunIdentity(spec_hash="0" * 16),
                             check_output=True)
    assert err.value.reason == "AdapterNotUsable" and err.value.field == "model.adapter"


def test_an_all_linear_adapter_saved_with_full_module_paths_is_continued(tiny, tmp_path):
    """PEFT saves target_modules all-linear as the adapted modules' full paths (model.layers.0.mlp.down_proj...)."""
    ids = batch()
    peft_model = model.with_lora(cfg(tiny, r=4), load_base(tiny))
    peft_model.save_pretrained(str(tmp_path / "a"))
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert any("." in t for t in saved["target_modules"])
    config = cfg(tiny, adapter=str(tmp_path / "a"), targetModules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    adapters.check_source(config)
    assert loss(model.with_lora(config, load_base(tiny), tmp_path / "a"), ids) == pytest.approx(loss(peft_model, ids))
