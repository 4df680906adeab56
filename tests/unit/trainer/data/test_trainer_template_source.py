"""model.chatTemplate never reads a pod-local file outside the model's own directory: inline Jinja, a TRL name,
an object-store URI, or a file inside model.name's directory (real paths: no symlink or `..` out of it)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lft_api.conditions import Reason
from lft_api.spec import TrainerConfig
from lft_trainer.data import rendering
from lft_trainer.errors import InvalidInput

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"


def config(model: str, template: str) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"name": model, "chatTemplate": template},
                                         "dataset": {"uri": "/data/train.jsonl"}, "output": {"uri": "/out"}})


def choose(model: str, template: str, work: Path) -> rendering.ChatTemplate:
    tokenizer = SimpleNamespace(chat_template=None)
    chosen = rendering.choose_template(config(model, template), tokenizer, True, work)
    assert tokenizer.chat_template == chosen.text
    return chosen


def refused(model: str, template: str, work: Path) -> InvalidInput:
    with pytest.raises(InvalidInput) as ei:
        choose(model, template, work)
    exc = ei.value
    assert exc.reason == Reason.INVALID_CHAT_TEMPLATE and exc.field == "model.chatTemplate"
    assert f"model.chatTemplate {template!r} is not allowed: give inline Jinja" in exc.message
    assert "object-store URI (s3://, gs://, az://)" in exc.message and "model's own directory" in exc.message
    return exc


@pytest.fixture
def model_dir(tmp_path) -> Path:
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "chat.jinja").write_text(TEMPLATE)
    (model / "templates").mkdir()
    (model / "templates" / "tools.jinja").write_text(TEMPLATE + "{# tools #}")
    return model


@pytest.mark.parametrize("template", ["/proc/self/environ", "file:///proc/self/environ",
                                      "/var/run/secrets/kubernetes.io/serviceaccount/token",
                                      "file:///var/run/secrets/kubernetes.io/serviceaccount/token"])
def test_pod_files_are_refused_whatever_the_model(tmp_path, model_dir, template) -> None:
    for model in ("microsoft/phi-3-mini", str(model_dir), f"file://{model_dir}", "s3://bucket/models/tiny"):
        refused(model, template, tmp_path)


def test_a_pod_file_outside_the_model_directory_is_not_read(tmp_path, model_dir) -> None:
    secret = tmp_path / "secret-values" / "AWS_SECRET_ACCESS_KEY"
    secret.parent.mkdir()
    secret.write_text("{{ planted }}")  # readable, and it would even render
    refused(str(model_dir), str(secret), tmp_path)
    refused("microsoft/phi-3-mini", str(secret), tmp_path)  # a hub model has no local directory to allow


def test_a_file_inside_the_model_directory_is_read(tmp_path, model_dir) -> None:
    for model in (str(model_dir), f"file://{model_dir}", f"{model_dir}/"):
        for template in (str(model_dir / "chat.jinja"), f"file://{model_dir}/templates/tools.jinja"):
            chosen = choose(model, template, tmp_path)
            assert chosen.source == template and chosen.text.startswith(TEMPLATE)


def test_symlinks_and_dots_cannot_step_out_of_the_model_directory(tmp_path, model_dir) -> None:
    outside = tmp_path / "environ"
    outside.write_text(TEMPLATE + "{# outside #}")
    (model_dir / "link.jinja").symlink_to(outside)
    refused(str(model_dir), str(model_dir / "link.jinja"), tmp_path)
    refused(str(model_dir), f"{model_dir}/../../environ", tmp_path)
    refused(str(model_dir), str(model_dir), tmp_path)  # the directory itself is no file inside it
    (tmp_path / "models" / "tiny-other").mkdir()
    (tmp_path / "models" / "tiny-other" / "chat.jinja").write_text(TEMPLATE)  # a sibling sharing the prefix
    refused(str(model_dir), str(tmp_path / "models" / "tiny-other" / "chat.jinja"), tmp_path)


def test_a_model_directory_that_is_the_root_or_links_to_it_allows_nothing(tmp_path) -> None:
    (tmp_path / "rootlink").symlink_to("/")
    for model in ("/", "file:///", str(tmp_path / "rootlink")):
        refused(model, "/proc/self/environ", tmp_path)


def test_a_symlinked_model_directory_allows_its_real_files(tmp_path, model_dir) -> None:
    (tmp_path / "current").symlink_to(model_dir)
    chosen = choose(str(tmp_path / "current"), str(tmp_path / "current" / "chat.jinja"), tmp_path)
    assert chosen.text == TEMPLATE


@pytest.mark.parametrize("template", ["http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                                      "https://example.com/t.jinja", "memory://t.jinja", "ftp://h/t.jinja"])
def test_only_object_stores_among_schemes(tmp_path, model_dir, template) -> None:
    refused(str(model_dir), template, tmp_path)


@pytest.mark.parametrize("template", ["s3://bucket/tpl.jinja", "s3a://bucket/tpl.jinja", "gs://b/tpl.jinja",
                                      "gcs://b/tpl.jinja", "az://c/tpl.jinja", "abfs://c/tpl.jinja"])
def test_object_store_uris_are_downloaded(tmp_path, monkeypatch, template) -> None:
    from lft_trainer.storage.store import Storage

    fetched: list[str] = []

    def download_file(self, rel, local):
        fetched.append(self.base_uri)
        Path(local).write_text(TEMPLATE)
        return Path(local)

    monkeypatch.setattr(Storage, "download_file", download_file)
    chosen = choose("microsoft/phi-3-mini", template, tmp_path)
    assert chosen.source == template and chosen.text == TEMPLATE and len(fetched) == 1


def test_inline_and_named_templates_need_no_file(tmp_path) -> None:
    assert choose("microsoft/phi-3-mini", TEMPLATE, tmp_path).source == "inline"
    assert choose("microsoft/phi-3-mini", "phi3", tmp_path).source == "trl:phi3"
    assert not os.listdir(tmp_path)
