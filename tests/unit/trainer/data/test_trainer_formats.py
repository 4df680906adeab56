"""Row formats, column mapping, the chat template and the rendered tokens: what trains is what the user gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lft_api.spec import ColumnsSpec, DatasetSpec, TrainerConfig
from lft_trainer.data import formats, rendering, trainset
from lft_trainer.data import sources as data
from lft_trainer.data.chat_templates import PHI3_CHAT_TEMPLATE
from lft_trainer.errors import InvalidInput
from lft_trainer.run import preflight

# A small tool-aware template with generation markers (readable token sequences).
TOOL_TEMPLATE = (
    "{% if tools %}<|system|>\n{% for t in tools %}{{ t.function.name }}{% endfor %}<|end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>\n{% generation %}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}{{ c.function.arguments | tojson }}</call>{% endfor %}"
    "{{ m.content }}<|end|>\n{% endgeneration %}{% else %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_ROW = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "tool_calls": [CALL]},
                         {"role": "tool", "content": "18C"},
                         {"role": "assistant", "content": "It is 18C."}],
            "tools": [WEATHER]}
EXPECTED_TEXT = ('<|system|>\nget_weather<|end|>\n<|user|>\nWeather in Paris?<|end|>\n<|assistant|>\n'
                 '<call>get_weather{"city": "Paris"}</call><|end|>\n<|tool|>\n18C<|end|>\n<|assistant|>\n'
                 'It is 18C.<|end|>\n')
# The tiny model's tokenizer (tiny_model.build is seeded: test_trainer_args checks it) on EXPECTED_TEXT.
EXPECTED_IDS = [1, 203, 75, 73, 88, 67, 91, 73, 267, 265, 86, 4, 203, 2, 203, 59, 73, 267, 265, 86, 225, 77, 82, 329,
                69, 86, 261, 35, 4, 203, 3, 203, 32, 71, 69, 80, 80, 34, 75, 73, 88, 67, 91, 73, 267, 265, 86, 95, 6,
                71, 77, 88, 93, 6, 30, 225, 6, 52, 69, 86, 261, 6, 97, 32, 19, 71, 69, 80, 80, 34, 4, 203, 32, 96, 88,
                83, 83, 80, 96, 34, 203, 21, 28, 39, 4, 203, 3, 203, 45, 88, 262, 313, 28, 39, 18, 4, 203]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from lft_trainer.model import tiny_model

    return AutoTokenizer.from_pretrained(tiny_model.build(tmp_path_factory.mktemp("tiny")))


def tpl(text: str, source: str = "inline") -> rendering.ChatTemplate:
    return rendering.ChatTemplate(text, text, source)


def config(tmp_path: Path, **over) -> TrainerConfig:
    raw = {"model": {"name": "m"}, "dataset": {"uri": str(tmp_path / "train.jsonl"), "evalFraction": 0},
           "output": {"uri": "o"}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    return TrainerConfig.model_validate(raw)


def prepared(tmp_path: Path, rows: list, tokenizer, **over) -> trainset.TrainData:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = config(tmp_path, **over)
    report = preflight.check_dataset(data.resolve(c.dataset, None, tmp_path), c.dataset, tmp_path / "rows")
    return trainset.build(c, report, tokenizer, tmp_path)


# --- formats ------------------------------------------------------------------------------------
def test_tool_calls_tools_and_tool_turns_are_kept():
    row = json.loads(json.dumps(TOOL_ROW))
    row["messages"][2]["tool_call_id"] = "call_1"
    row["messages"][0]["name"] = None  # None values are left out, as apply_chat_template does
    norm = formats.normalize(row, "messages")
    assert norm["tools"] == [WEATHER]
    assert norm["messages"][1] == {"role": "assistant", "tool_calls": [CALL], "content": ""}
    assert norm["messages"][2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
    assert "name" not in norm["messages"][0]


def test_text_parts_developer_role_and_tools_as_a_json_string():
    row = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
                        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
           "tools": json.dumps([WEATHER])}
    norm = formats.normalize(row, "messages")
    assert norm["messages"][0] == {"role": "developer", "content": "Be brief."} and norm["tools"] == [WEATHER]


@pytest.mark.parametrize("row, field, reason", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]}, "messages[0].content[0].type",
     "messages[0].content[0].type 'image' is not supported (text parts only)"),
    ({"messages": [{"role": "user", "content": "q", "tool_calls": [CALL]}]}, "messages[0].tool_calls",
     "messages[0].tool_calls on a user turn (only assistant turns call tools)"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
     "messages[0].tool_calls[0].function.name", "messages[0].tool_calls[0].function.name is missing"),
    ({"messages": [{"role": "assistant", "content": "a"}], "tools": "{not json"}, "tools",
     "tools is a string but not JSON (Expecting property name enclosed in double quotes)"),
    ({"messages": [{"role": "assistant", "content": "a"}], "tools": {"a": 1}}, "tools",
     "tools is a object, expected a list of tool schemas (objects)"),
])
def test_bad_chat_rows_are_refused_with_the_field(row, field, reason):
    with pytest.raises(formats.RowError) as ei:
        formats.normalize(row, "messages")
    assert (ei.value.field, ei.value.reason) == (field, reason)


def test_conversational_prompt_completion():
    row = {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}
    assert formats.detect_format(row) == "prompt-completion"
    assert formats.normalize(row, "prompt-completion") == row
    with pytest.raises(formats.RowError, match="completion is a string, but prompt is a message list"):
        formats.normalize({"prompt": row["prompt"], "completion": "A"}, "prompt-completion")
    with pytest.raises(formats.RowError, match="completion has no assistant turn"):
        formats.normalize({"prompt": row["prompt"], "completion": [{"role": "user", "content": "x"}]},
                          "prompt-completion")


# --- column mapping -----------------------------------------------------------------------------
def test_sharegpt_preset_maps_columns_keys_and_roles():
    m = formats.mapping_of(ColumnsSpec(preset="sharegpt"))
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                             {"from": "gpt", "value": "A"}], "id": 7}
    assert formats.detect_format(row, m) == "messages"
    assert formats.normalize(row, "messages", m) == {"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    bad = {"conversations": [{"from": "bot", "value": "Q"}]}
    with pytest.raises(formats.RowError) as ei:
        formats.normalize(bad, "messages", m)
    assert ei.value.field == "conversations[0].from"
    assert ei.value.reason.startswith("conversations[0].from 'bot' is not one of system, developer, user")
    assert ei.value.reason.endswith("(after dataset.columns.roles)")


def test_alpaca_preset_joins_instruction_and_input():
    m = formats.mapping_of(ColumnsSpec(preset="alpaca"))
    row = {"instruction": "Translate.", "input": "chat", "output": "cat"}
    assert formats.normalize(row, "prompt-completion", m) == {"prompt": "Translate.\n\nchat", "completion": "cat"}
    assert formats.normalize({**row, "input": ""}, "prompt-completion", m)["prompt"] == "Translate."
    with pytest.raises(formats.RowError, match="^output is missing$"):
        formats.normalize({"instruction": "x", "input": ""}, "prompt-completion", m)


def test_explicit_columns_complete_a_preset():
    m = formats.mapping_of(ColumnsSpec(preset="sharegpt", messages="dialog", roles={"bot": "assistant"}))
    assert (m.messages, m.role_key, m.roles["bot"], m.roles["human"]) == ("dialog", "from", "assistant", "user")
    assert formats.user_field("messages[2].tool_calls[0]", m) == "dialog[2].tool_calls[0]"


def test_sharegpt_file_through_preflight_names_the_users_columns(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": " "}]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DatasetSpec(uri=str(tmp_path / "train.jsonl"), columns={"preset": "sharegpt"})
    with pytest.raises(InvalidInput) as ei:
        preflight.check_dataset(data.resolve(spec, None, tmp_path), spec, tmp_path / "rows")
    assert ei.value.message == f"{tmp_path}/train.jsonl row 2: conversations[1].value is empty"
    assert (ei.value.row, ei.value.field) == (2, "conversations[1].value")


# --- rendering: exact tokens, labels ------------------------------------------------------------
def test_tool_call_row_renders_exactly_and_the_tool_call_trains(tok):
    norm = formats.normalize(TOOL_ROW, "messages")
    ids, labels = rendering.encode(norm, tok, tpl(TOOL_TEMPLATE), assistant_only=True)
    assert tok.apply_chat_template(norm["messages"], tools=norm["tools"], chat_template=TOOL_TEMPLATE,
                                   tokenize=False) == EXPECTED_TEXT
    assert ids == EXPECTED_IDS
    trained = [t for t in labels if t != rendering.IGNORE]
    assert tok.decode(trained) == '<call>get_weather{"city": "Paris"}</call><|end|>\nIt is 18C.<|end|>\n'
    start = EXPECTED_TEXT.index("<call>")
    prefix = tok(EXPECTED_TEXT[:start], add_special_tokens=False)["input_ids"]
    assert labels[:len(prefix)] == [rendering.IGNORE] * len(prefix)  # the user turn and the tools do not train
    # Without assistantOnlyLoss every token trains.
    assert rendering.encode(norm, tok, tpl(TOOL_TEMPLATE), assistant_only=False) == (EXPECTED_IDS, EXPECTED_IDS)


def test_a_template_that_drops_tool_turns_is_refused_naming_the_row(tmp_path, tok):
    with pytest.raises(InvalidInput) as ei:
        prepared(tmp_path, [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                            TOOL_ROW], tok, model={"chatTemplate": "phi3"})
    assert ei.value.message == (
        f"{tmp_path}/train.jsonl row 2: the chat template does not render messages[1].tool_calls[0] (function "
        "get_weather): set model.chatTemplate to a template that supports tool calls")
    assert (ei.value.row, ei.value.field) == (2, "messages[1].tool_calls[0]")
    no_tools = {"messages": TOOL_ROW["messages"][2:]}  # a tool turn the Phi-3 template leaves out
    with pytest.raises(InvalidInput, match=r"row 1: the chat template does not render messages\[0\] \(role tool\)"):
        prepared(tmp_path, [no_tools], tok, model={"chatTemplate": PHI3_CHAT_TEMPLATE})


def test_a_turn_the_template_writes_as_json_counts_as_rendered():
    msgs = [{"role": "user", "content": 'Say "hi"\nplease'}, {"role": "assistant", "content": "hi"}]
    text = '{"user": "Say \\"hi\\"\\nplease"} assistant: hi'  # the user turn through | tojson
    rendering.check_rendered(text, msgs, None)
    with pytest.raises(formats.RowError, match=r"does not render messages\[1\] \(role assistant\)"):
        rendering.check_rendered('{"user": "Say \\"hi\\"\\nplease"}', msgs, None)


def test_prompt_completion_labels_are_the_completion(tok):
    ids, labels = rendering.encode({"prompt": "2+2=", "completion": "4"}, tok, None, assistant_only=False)
    assert tok.decode(ids) == "2+2=4<|endoftext|>"
    assert tok.decode([t for t in labels if t != rendering.IGNORE]) == "4<|endoftext|>"
    conv = {"prompt": [{"role": "user", "content": "2+2="}], "completion": [{"role": "assistant", "content": "4"}]}
    ids, labels = rendering.encode(conv, tok, tpl(PHI3_CHAT_TEMPLATE), assistant_only=False)
    assert tok.decode(ids) == "<|user|>\n2+2=<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>"
    assert tok.decode([t for t in labels if t != rendering.IGNORE]) == "4<|end|>\n<|endoftext|>"


def test_text_rows_train_whole_and_are_refused_for_assistant_only_loss(tok):
    ids, labels = rendering.encode({"text": "abc"}, tok, None, assistant_only=False)
    assert ids == labels and tok.decode(ids) == "abc<|endoftext|>"
    with pytest.raises(formats.RowError, match="a text row has no assistant turn"):
        rendering.encode({"text": "abc"}, tok, None, assistant_only=True)


# --- the template: given, named, refused ---------------------------------------------------------
def test_no_template_and_chat_rows_is_refused_naming_the_field(tmp_path, tok):
    bare = type(tok).from_pretrained(tok.name_or_path)
    bare.chat_template = None
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    with pytest.raises(InvalidInput) as ei:
        prepared(tmp_path, rows, bare)
    assert ei.value.field == "model.chatTemplate" and "has no chat template" in ei.value.message
    assert prepared(tmp_path, [{"text": "plain"}], bare).template is None  # no chat rows: none needed
    named = prepared(tmp_path, rows, bare, model={"chatTemplate": "phi3"})  # asked for by name: used
    assert named.template.source == "trl:phi3" and bare.chat_template == named.template.text


def test_template_from_a_file_and_inline(tmp_path, tok):
    (tmp_path / "t.jinja").write_text(TOOL_TEMPLATE)  # a file inside the (local) model's directory
    c = config(tmp_path, model={"name": str(tmp_path), "chatTemplate": str(tmp_path / "t.jinja")})
    t = rendering.choose_template(c, tok, True, tmp_path)
    assert (t.text, t.source) == (TOOL_TEMPLATE, str(tmp_path / "t.jinja"))
    with pytest.raises(InvalidInput, match="model.chatTemplate 'nonsense' is neither Jinja, a URI nor a known name"):
        rendering.choose_template(config(tmp_path, model={"chatTemplate": "nonsense"}), tok, True, tmp_path)


def test_assistant_only_loss_needs_generation_markers(tmp_path, tok):
    plain = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    c = config(tmp_path, model={"chatTemplate": plain}, training={"assistantOnlyLoss": True})
    with pytest.raises(InvalidInput) as ei:
        rendering.choose_template(c, tok, True, tmp_path)
    assert ei.value.field == "training.assistantOnlyLoss" and "{% generation %}" in ei.value.message
    # Phi-3's template has no markers, but TRL ships its marked variant: that one renders the rows.
    c = config(tmp_path, model={"chatTemplate": "phi3"}, training={"assistantOnlyLoss": True})
    t = rendering.choose_template(c, tok, True, tmp_path)
    assert "{% generation %}" in t.training and t.describe()["trainingVariant"] is True


# --- what trained is recorded --------------------------------------------------------------------
def test_lengths_truncation_and_dropped_rows_are_counted(tmp_path, tok):
    short = {"prompt": "hi", "completion": "yo"}
    long = {"prompt": "tree " * 40, "completion": "ok"}  # the prompt alone fills maxLength: nothing trains
    td = prepared(tmp_path, [short, long, {"text": "a " * 30}], tok, training={"maxLength": 16})
    stats = td.stats["train"]
    assert (stats.rows, stats.truncated, stats.dropped) == (3, 2, 1)
    assert len(td.train) == 2 and all(len(r) <= 16 for r in td.train["input_ids"])
    lengths = sorted(len(tok(r["prompt"] + r["completion"] + "<|endoftext|>")["input_ids"]) for r in (short, long))
    assert stats.lengths["min"] == lengths[0] and stats.lengths["max"] == lengths[1]
    wire = td.summary(16)["train"]
    assert wire["dropped"]["rows"] == 1 and "no trained token within training.maxLength" in wire["dropped"]["reason"]
    with pytest.raises(InvalidInput) as ei:
        prepared(tmp_path, [long], tok, training={"maxLength": 16})
    assert ei.value.field == "training.maxLength"
    assert ei.value.message.startswith("no row has a trained token within training.maxLength=16 (token lengths {")


def test_length_stats_nearest_rank():
    assert trainset.length_stats(list(range(1, 101))) == {"min": 1, "median": 50, "p95": 95, "max": 100,
                                                          "mean": 50.5}
    assert trainset.length_stats([]) == {}


def test_eval_fraction_and_max_samples_keep_the_row_numbers(tmp_path, tok):
    rows = [{"text": f"row {i}"} for i in range(40)]
    td = prepared(tmp_path, rows, tok, dataset={"evalFraction": 0.1, "maxSamples": 20})
    assert (len(td.train), len(td.eval)) == (20, 4)
    lines = sorted([*td.train_rows["line"], *td.eval_rows["line"]])
    assert len(set(lines)) == 24 and all(json.loads(r)["text"] == f"row {n - 1}"
                                         for r, n in zip(td.train_rows["row"], td.train_rows["line"], strict=True))
