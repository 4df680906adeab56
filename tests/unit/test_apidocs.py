"""docs/api.md is generated from the CRD schema; the committed file must match the generator."""

from __future__ import annotations

import re

import yaml

from lft_operator import apidocs, crdgen


def test_committed_api_reference_matches_the_generator():
    path = apidocs.OUTPUT_PATH
    assert path.exists(), f"{path} missing: run python -m lft_operator.apidocs --write (make crds)"
    assert path.read_text() == apidocs.render(), f"{path} is stale: run python -m lft_operator.apidocs --write (make crds)"
    assert apidocs.main(["--check"]) == 0


def test_every_spec_field_has_a_row():
    text = apidocs.reference()
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name, node in spec["properties"].items():
        assert f"`{name}`" in text, name
        for child in node.get("properties", {}):
            assert f"### spec.{name}\n" in text and f"`{child}`" in text, f"spec.{name}.{child}"


def test_enums_and_defaults_are_listed():
    text = apidocs.reference()
    row = next(line for line in text.splitlines() if line.startswith("| `dtype` |"))
    assert "`auto`, `bfloat16`, `float16`, `float32`" in row and "| `auto` |" in row


def test_vendored_core_types_are_named_not_expanded():
    text = apidocs.reference()
    assert "core/v1 [NodeAffinity](" in text
    assert "### spec.affinity.nodeAffinity" not in text
    assert "### spec.podTemplate.volumes[].secret" in text  # hand-typed in lft_api.pod_types: expanded


def test_intro_example_is_a_valid_resource():
    from lft_api.resource import LoRAFineTuneSpec

    example = re.search(r"```yaml\n(.*?)```", apidocs.INTRO_PATH.read_text(), re.S).group(1)
    resource = yaml.safe_load(example)
    assert resource["apiVersion"] == "finetune.dev/v1alpha1" and resource["kind"] == "LoRAFineTune"
    LoRAFineTuneSpec.model_validate(resource["spec"])


def test_links_between_sections_resolve():
    text = apidocs.render()
    anchors = {apidocs._anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, target
