"""Pre-flight: every malformed input ends with a message naming the file, row, field and reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lft_api.spec import DatasetSpec, LoraSpec, ModelSpec, TrainerConfig
from lft_trainer.data import sources as data
from lft_trainer.errors import ConfigNotThisRun, InvalidInput
from lft_trainer.run import preflight

REPO = Path(__file__).resolve().parents[4]
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def check(path: Path, fmt: str = "auto", **kw) -> preflight.DatasetReport:
    spec = DatasetSpec(uri=str(path), format=fmt, **kw)
    return preflight.check_dataset(data.resolve(spec, None, path.parent / "cache"), spec)


def fails(path: Path, fmt: str = "auto", **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as ei:
        check(path, fmt, **kw)
    return ei.value


# --- dataset rows -----------------------------------------------------------------------------
def test_example_dataset_passes_every_row():
    report = check(REPO / "examples/data/chat_tiny.jsonl")
    assert report.formats == {"messages": 480}
    assert report.splits["train"].checked == 480 and len(data.open_rows(report.splits["train"].path)) == 480
    assert report.summary()["sampled"] is False


def test_unknown_role_names_file_row_and_field():
    err = fails(REPO / "examples/data/bad_rows.jsonl")
    bad = json.loads((REPO / "examples/data/bad_rows.jsonl").read_text().splitlines()[16])
    idx = [m["role"] for m in bad["messages"]].index("robot")
    assert err.message == (f"{REPO}/examples/data/bad_rows.jsonl row 17: messages[{idx}].role 'robot' "
                           "is not one of system, developer, user, assistant, tool")
    assert (err.reason, err.row, err.field) == ("InvalidDataset", 17, f"messages[{idx}].role")


def test_bad_json_line(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [GOOD, '{"messages": [', GOOD])
    err = fails(f)
    assert err.message.startswith(f"{f} row 2: invalid JSON: ")
    assert err.row == 2


def test_missing_messages(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, {"msgs": []}])
    err = fails(f, fmt="messages")
    assert err.message == f"{f} row 3: messages is missing (a list of {{role, content}})"
    assert err.field == "messages"


def test_empty_content(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]}
    err = fails(write_jsonl(tmp_path / "train.jsonl", [GOOD, row]))
    assert err.message.endswith("train.jsonl row 2: messages[1].content is empty")
    assert err.field == "messages[1].content"


def test_content_not_a_string(tmp_path):
    row = {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}
    err = fails(write_jsonl(tmp_path / "train.jsonl", [row, GOOD]))
    assert err.message.endswith("row 1: messages[0].content is a int, expected a string or a list of text parts")


def test_no_assistant_turn(tmp_path):
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    err = fails(write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, GOOD, row]))
    assert err.message.endswith("row 4: messages has no assistant turn (roles: system, user): nothing to learn from")


def test_prompt_not_a_string(tmp_path):
    rows = [{"prompt": "p", "completion": "c"}, {"prompt": 3, "completion": "c"}, {"prompt": ["p"], "completion": "c"}]
    err = fails(write_jsonl(tmp_path / "pc.jsonl", rows))
    assert err.message == (f"{tmp_path}/pc.jsonl row 2: prompt is a int, expected a string "
                           "(more bad rows: 3)")
    assert err.field == "prompt"
    err = fails(write_jsonl(tmp_path / "pc.jsonl", rows[2:]))
    assert err.message.endswith("row 1: prompt[0] is a string, expected an object with role and content")


def test_text_missing(tmp_path):
    err = fails(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"body": "b"}]), fmt="text")
    assert err.message.endswith("t.jsonl row 2: text is missing")


def test_undetectable_format(tmp_path):
    err = fails(write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}]))
    assert "row 1: cannot detect the dataset format from keys [answer, question]" in err.message
    assert err.field == "dataset.format"


def test_empty_file(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("\n\n")
    err = fails(f)
    assert err.message == f"{f}: the file is empty (no rows)"


def test_unreadable_parquet(tmp_path):
    f = tmp_path / "train.parquet"
    f.write_bytes(b"this is not parquet at all")
    err = fails(f)
    assert err.reason == "UnreadableDataset"
    assert err.message.startswith(f"{f}: not a readable Parquet file")


def test_not_utf8(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    assert fails(f).message.endswith("row 2: not valid UTF-8 (byte 0)")


def test_missing_dataset_file(tmp_path):
    spec = DatasetSpec(uri=str(tmp_path / "nope.jsonl"))
    with pytest.raises(InvalidInput) as ei:
        data.resolve(spec, None, tmp_path)
    assert ei.value.reason == "DatasetNotFound"
    assert ei.value.message == f"dataset {tmp_path}/nope.jsonl does not exist"


def test_several_bad_rows_are_listed(tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}]}
    err = fails(write_jsonl(tmp_path / "train.jsonl", [GOOD, bad, GOOD, bad, bad]))
    assert "row 2: messages has no assistant turn" in err.message
    assert err.message.endswith("(more bad rows: 4, 5)")


def test_json_array_parquet_and_split_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    (tmp_path / "d/train.json").write_text(json.dumps([GOOD] * 5))
    pq.write_table(pa.Table.from_pylist([{"text": "x"}, {"text": "y"}]), tmp_path / "p.parquet")
    report = check(tmp_path / "d", eval_split=None)
    assert report.splits["train"].checked == 5
    assert check(tmp_path / "p.parquet").formats == {"text": 2}
    (tmp_path / "d/eval.json").write_text(json.dumps([GOOD, {"messages": [{"role": "bot", "content": "x"}]}]))
    err = fails(tmp_path / "d", eval_split="eval")
    assert err.message == f"{tmp_path}/d/eval.json row 2: messages[0].role 'bot' is not one of system, developer, user, assistant, tool"


def test_every_row_is_checked_and_kept_in_order(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(300)]
    f = write_jsonl(tmp_path / "big.jsonl", [*rows, "{broken"])
    assert fails(f).message == f"{f} row 301: invalid JSON: Expecting property name enclosed in double quotes at column 2"
    f = write_jsonl(tmp_path / "big.jsonl", ["", *rows])  # a blank line: row numbers stay line numbers
    report = check(f)
    kept = data.open_rows(report.splits["train"].path)
    assert kept["line"] == list(range(2, 302)) and set(kept["file"]) == {str(f)}
    assert [json.loads(r) for r in kept["row"]] == rows
    assert report.files == [{"file": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                             "bytes": f.stat().st_size}]


# --- config, model, hardware --------------------------------------------------------------------
def test_invalid_config_names_the_field(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"},
                             "training": {"learningRate": -1}}))
    with pytest.raises(InvalidInput) as ei:
        preflight.load_config(f)
    assert ei.value.reason == "InvalidConfig"
    assert ei.value.message == f"config file {f}: training.learningRate: Input should be greater than 0"


def test_config_not_json(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{model: ")
    with pytest.raises(InvalidInput) as ei:
        preflight.load_config(f)
    assert ei.value.message.startswith(f"config file {f}: invalid JSON: ")


def test_a_config_written_for_another_run_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"model": {"name": "m"}, "dataset": {"uri": "d"}, "output": {"uri": "o"}}))
    monkeypatch.setenv("LFT_UID", "uid-new")
    assert preflight.load_config(f).model.name == "m"  # no owner file: a config given by hand
    (tmp_path / "owner-uid").write_text("uid-new")
    assert preflight.load_config(f).model.name == "m"
    (tmp_path / "owner-uid").write_text("uid-old")  # an earlier namesake's ConfigMap, still mounted
    with pytest.raises(ConfigNotThisRun) as ei:
        preflight.load_config(f)
    assert "written for LoRAFineTune UID uid-old, this pod runs UID uid-new" in str(ei.value)


def test_missing_model_dir(tmp_path):
    with pytest.raises(InvalidInput) as ei:
        preflight.check_model(ModelSpec(name=str(tmp_path / "no-model")), None)
    assert ei.value.reason == "ModelNotFound"
    assert ei.value.message == f"model {tmp_path}/no-model: directory does not exist"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no config.json in the directory"):
        preflight.check_model(ModelSpec(name=str(tmp_path / "empty")), None)
    preflight.check_model(ModelSpec(name="microsoft/Phi-3-mini-4k-instruct"), None)  # hub ids: checked at load


def test_quantization_needs_a_gpu():
    with pytest.raises(InvalidInput) as ei:
        preflight.check_quantization(LoraSpec(quantization="4bit"), cuda_available=False)
    assert ei.value.reason == "UnsupportedHardware"
    assert ei.value.message.startswith("lora.quantization '4bit' (QLoRA, bitsandbytes) needs a CUDA GPU")
    preflight.check_quantization(LoraSpec(), cuda_available=False)


def test_main_exits_3_with_termination_message(tmp_path, monkeypatch, capsys):
    from lft_trainer.__main__ import main

    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text("{}")  # pre-flight only looks for it
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TrainerConfig(
        model={"name": str(tmp_path / "model")}, dataset={"uri": str(REPO / "examples/data/bad_rows.jsonl")},
        output={"uri": str(tmp_path / "out")}).to_wire()))
    term = tmp_path / "termination-log"
    monkeypatch.setenv("LFT_TERMINATION_LOG", str(term))
    assert main(["--config", str(cfg)]) == 3
    msg = json.loads(term.read_text())
    assert msg["outcome"] == "invalid_input" and msg["reason"] == "InvalidDataset"
    assert "bad_rows.jsonl row 17: messages[" in msg["message"]
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "error" and line["row"] == 17 and line["field"].endswith(".role")

    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model": {"name": str(tmp_path / "absent")}}))
    assert main(["--config", str(cfg)]) == 3
    assert json.loads(term.read_text())["reason"] == "ModelNotFound"


def test_main_missing_storage_credentials_exit_3(tmp_path, monkeypatch, capsys):
    from lft_trainer.__main__ import main

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text("{}")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TrainerConfig(
        model={"name": str(tmp_path / "model")}, dataset={"uri": str(REPO / "examples/data/chat_tiny.jsonl")},
        output={"uri": "s3://bucket/run"}, storage={"endpointUrl": "http://127.0.0.1:9"}).to_wire()))
    monkeypatch.setenv("LFT_TERMINATION_LOG", str(tmp_path / "term"))
    assert main(["--config", str(cfg)]) == 3
    msg = json.loads((tmp_path / "term").read_text())
    assert msg["reason"] == "MissingCredentials" and "AWS_ACCESS_KEY_ID" in msg["message"]


def test_hub_dataset_config_and_split_through_datasets_local_loading(tmp_path, monkeypatch):
    """A directory laid out like a hub dataset snapshot (README configs), loaded by datasets' own loader:
    dataset.config picks the configuration; an unknown one or an unknown split is DatasetNotFound."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "dscache"))
    snap = tmp_path / "datasets--acme--chat/snapshots" / ("a" * 40)
    for cfg, rows in (("default", [GOOD]), ("plain", [{"text": "t1"}, {"text": "t2"}])):
        (snap / cfg).mkdir(parents=True)
        write_jsonl(snap / cfg / "train.jsonl", rows)
    (snap / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.jsonl\n" for c in ("default", "plain"))
        + "---\n")
    spec = DatasetSpec(uri=str(snap), config="plain")
    source = data.DatasetSource(uri=spec.uri, hub_id=spec.uri)
    rows = list(data.iter_rows(source, "train", spec))
    assert rows == [(f"{snap} (split train)", 1, {"text": "t1"}), (f"{snap} (split train)", 2, {"text": "t2"})]
    report = preflight.check_dataset(source, spec, tmp_path / "rows")
    assert report.formats == {"text": 2} and report.files == []
    assert [r[2] for r in data.iter_rows(source, "train", DatasetSpec(uri=str(snap)))] == [GOOD]
    with pytest.raises(InvalidInput) as ei:
        list(data.iter_rows(source, "train", DatasetSpec(uri=str(snap), config="nope")))
    assert ei.value.reason == "DatasetNotFound" and ei.value.field == "dataset.uri"
    assert ei.value.message.startswith(f"dataset {snap} config 'nope' split 'train': BuilderConfig 'nope' not found")
    with pytest.raises(InvalidInput, match="split 'eval': Unknown split"):
        list(data.iter_rows(source, "eval", spec))
