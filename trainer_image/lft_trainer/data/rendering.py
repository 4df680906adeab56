"""The chat template and the rows as the model trains on them: token ids and labels, one function per format.

Every row is rendered here, once, by the same code for every dataset size (TRL gets the result, already
tokenized): a chat row whose messages, tool calls or tool schemas the template leaves out is refused
(InvalidInput naming the row), not trained without them. Labels follow TRL's rules: the whole sequence
for messages and text, the completion for prompt-completion, and with training.assistantOnlyLoss only the
tokens the template marks as generated ({% generation %}). Sequences are cut to training.maxLength
(keep the start); a row left with no trained token is dropped, and both are counted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lft_api.conditions import Reason
from lft_api.spec import StorageSpec, TrainerConfig

from ..errors import InvalidInput
from .formats import RowError, is_conversational

TEMPLATE_FIELD = "model.chatTemplate"
IGNORE = -100
# Where a template file may come from (filesystems.split_uri's names: s3a, gcs, abfs, abfss, adl are aliases).
# Not http(s) and friends: from the pod they reach the cloud's metadata service and in-cluster endpoints.
TEMPLATE_STORES = ("s3", "gs", "az")
ACCEPTED = ("inline Jinja, the name of a template TRL ships, an object-store URI (s3://, gs://, az://) or a file "
            "inside the model's own directory (model.name a local path)")


@dataclass(frozen=True)
class ChatTemplate:
    text: str  # what the tokenizer carries (and saves with the adapter)
    training: str  # what rows are rendered with: `text`, or TRL's variant with {% generation %} markers
    source: str  # tokenizer | inline | <uri> | trl:<name>

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": hashlib.sha256(self.text.encode()).hexdigest(),
                "trainingVariant": self.training != self.text}


# ---------------------------------------------------------------------------------------------
# which template
# ---------------------------------------------------------------------------------------------
def trl_template_names() -> list[str]:
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    return sorted(p.stem for p in folder.glob("*.jinja") if not p.stem.endswith("_training"))


def _local_path(value: str) -> str | None:
    """The absolute local path value names (a plain path or file://), else None (a hub id, another scheme)."""
    from ..storage.filesystems import split_uri
    from .sources import looks_like_path

    if not looks_like_path(value):
        return None
    protocol, path = split_uri(os.path.expanduser(value))
    return path if protocol == "file" else None


def template_file(value: str, model_name: str) -> Path:
    """The real path of a local template file, when it lies inside the model's directory (model_name a local
    path): resolved, so a symlink or `..` cannot step out of it. Any other pod file (the ServiceAccount
    token, /proc/self/environ) would be read into the tokenizer and saved with the adapter: InvalidInput."""
    path, model_dir = _local_path(value), _local_path(model_name)
    if path is not None and model_dir is not None:
        real, root = os.path.realpath(path), os.path.realpath(model_dir)
        if root != "/" and real.startswith(root.rstrip("/") + "/"):
            return Path(real)
    raise InvalidInput(Reason.INVALID_CHAT_TEMPLATE, f"{TEMPLATE_FIELD} {value!r} is not allowed: give {ACCEPTED}; model.name is "
                       f"{model_name!r}. Other files of the pod are never read", field=TEMPLATE_FIELD)


def _from_spec(value: str, storage: StorageSpec | None, work: Path, model_name: str) -> tuple[str, str]:
    """(template text, source) for model.chatTemplate: a TRL template name, inline Jinja, an object-store URI,
    or a file inside the model's directory (template_file)."""
    from .sources import looks_like_path

    if value in trl_template_names():
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / f"{value}.jinja").read_text(), f"trl:{value}"
    if "{{" in value or "{%" in value:
        return value, "inline"
    if not looks_like_path(value):
        raise InvalidInput(Reason.INVALID_CHAT_TEMPLATE, f"{TEMPLATE_FIELD} {value!r} is neither Jinja, a URI nor a known name "
                           f"({', '.join(trl_template_names())})", field=TEMPLATE_FIELD)
    from ..storage.filesystems import split_uri
    from ..storage.store import Storage

    protocol, _ = split_uri(value)
    # Another scheme (http://, memory://...) or a file outside the model's directory: InvalidInput here.
    local = None if protocol in TEMPLATE_STORES else template_file(value, model_name)
    try:
        if local is None:
            local = Storage(value, storage).download_file("", work / "template.jinja")
        return local.read_text(encoding="utf-8"), value
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(Reason.INVALID_CHAT_TEMPLATE, f"{TEMPLATE_FIELD} {value}: cannot read it ({exc})",
                           field=TEMPLATE_FIELD, file=value) from None


def choose_template(config: TrainerConfig, tokenizer, needed: bool, work: Path) -> ChatTemplate | None:
    """The template chat rows are rendered with (set on the tokenizer), or None when no row needs one.

    No template and chat rows: refused, naming model.chatTemplate. assistantOnlyLoss: the template marks the
    generated turns, or TRL has a marked variant of it; otherwise refused, naming training.assistantOnlyLoss.
    """
    if config.model.chat_template:
        text, source = _from_spec(config.model.chat_template, config.storage, work, config.model.name)
        tokenizer.chat_template = text
    elif tokenizer.chat_template:
        text, source = tokenizer.chat_template, "tokenizer"
    elif needed:
        raise InvalidInput(Reason.NO_CHAT_TEMPLATE, f"the tokenizer of {config.model.name} has no chat template and the dataset "
                           f"has chat rows: set {TEMPLATE_FIELD} ({ACCEPTED}; e.g. phi3)", field=TEMPLATE_FIELD)
    else:
        return None
    if not isinstance(text, str):  # named variants: the default one
        text = text["default"]
    training = text
    if config.training.assistant_only_loss and needed:
        training = _training_variant(tokenizer, text)
    return ChatTemplate(text, training, source)


def _training_variant(tokenizer, text: str) -> str:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(text):
        return text
    try:
        variant = get_training_chat_template(tokenizer)
    except ValueError:
        variant = None
    if not variant:
        raise InvalidInput(Reason.INVALID_CHAT_TEMPLATE, "training.assistantOnlyLoss needs a chat template that marks the assistant's "
                           "turns with {% generation %} ... {% endgeneration %}, and this one does not (nor is it one "
                           f"TRL has a marked variant of): set {TEMPLATE_FIELD} to such a template or turn "
                           "training.assistantOnlyLoss off", field="training.assistantOnlyLoss")
    return variant


# ---------------------------------------------------------------------------------------------
# one row
# ---------------------------------------------------------------------------------------------
def _render(tokenizer, template: str, messages: list[dict], tools: list | None, masks: bool,
            generation_prompt: bool = False) -> tuple[str, list[int], list[int] | None]:
    """(text, input_ids, assistant mask or None)."""
    kw = dict(tools=tools, chat_template=template, add_generation_prompt=generation_prompt)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **kw)
        if not masks:
            return text, tokenizer(text, add_special_tokens=False)["input_ids"], None
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, **kw)
    except Exception as exc:  # jinja2 TemplateError, raise_exception() in the template, a type error...
        raise RowError(None, f"the chat template cannot render this row: {str(exc).splitlines()[0][:200]}") from None
    return text, list(out["input_ids"]), list(out["assistant_masks"])


def _dropped(messages: list[dict], probe) -> int | None:
    """The first message whose content the template leaves out: each content replaced by a marker, rendered."""
    marked = [{**m, "content": f"LFTPROBE{i}Z"} if m.get("content", "").strip() else m for i, m in enumerate(messages)]
    text = probe(marked)
    return next((i for i, m in enumerate(marked) if m["content"].startswith("LFTPROBE") and m["content"] not in text),
                None)


def check_rendered(text: str, messages: list[dict], tools: list | None, at: str = "messages", probe=None) -> None:
    """Every message's text, every tool call's name and argument names are in `text`, in the messages' order;
    every tool's name is in it. probe(messages) -> text renders other messages the same way (to name the turn
    that is left out)."""
    cursor = 0
    for i, m in enumerate(messages):
        f, start = f"{at}[{i}]", cursor
        content = m.get("content", "").strip()
        found = text.find(content, start) if content else start
        if found < 0:  # templates that write a turn as JSON (| tojson) escape it
            content = json.dumps(content, ensure_ascii=False)[1:-1]
            found = text.find(content, start)
        if found < 0:
            dropped = _dropped(messages, probe) if probe else None
            i = i if dropped is None else dropped
            f, role = f"{at}[{i}]", messages[i]["role"]
            raise RowError(f, f"the chat template does not render {f} (role {role}): its content is missing "
                           f"from the rendered text; set {TEMPLATE_FIELD} to a template that renders {role} turns")
        cursor = found + len(content)
        for j, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function", call)
            args = fn.get("arguments")
            pos = start
            for name in [fn["name"], *(args if isinstance(args, dict) else [])]:
                pos = text.find(str(name), pos)
                if pos < 0:
                    raise RowError(f"{f}.tool_calls[{j}]", f"the chat template does not render {f}.tool_calls[{j}] "
                                   f"(function {fn['name']}): set {TEMPLATE_FIELD} to a template that supports tool "
                                   "calls")
                pos += len(str(name))
            start = pos
            cursor = max(cursor, pos)
    for k, tool in enumerate(tools or []):
        name = (tool.get("function") or tool).get("name")
        if name and str(name) not in text:
            raise RowError(f"tools[{k}]", f"the chat template does not render tools[{k}] ({name}): set "
                           f"{TEMPLATE_FIELD} to a template that supports tools")


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _with_eos(s: str, eos: str | None) -> str:
    return s if not eos or s.endswith(eos) else s + eos


def encode(row: dict, tokenizer, template: ChatTemplate | None, assistant_only: bool) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a normalized row, before truncation. RowError for a row the template mangles."""
    eos = tokenizer.eos_token
    if "text" in row:
        if assistant_only:
            raise RowError("text", "a text row has no assistant turn for training.assistantOnlyLoss")
        ids = tokenizer(_with_eos(row["text"], eos))["input_ids"]
        return ids, list(ids)
    if not is_conversational(row):  # standard prompt-completion: the loss on the completion
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        ids = tokenizer(row["prompt"] + _with_eos(row["completion"], eos))["input_ids"]
        k = _prefix(prompt_ids, ids)
        return ids, [IGNORE] * k + ids[k:]
    tools = row.get("tools")
    if "messages" in row:
        text, ids, mask = _render(tokenizer, template.training, row["messages"], tools, assistant_only)
        check_rendered(text, row["messages"], tools, probe=lambda ms: _render(tokenizer, template.training, ms,
                                                                               tools, False)[0])
        labels = list(ids) if mask is None else [t if b else IGNORE for t, b in zip(ids, mask, strict=False)]
    else:
        msgs = row["prompt"] + row["completion"]
        _, prompt_ids, _ = _render(tokenizer, template.training, row["prompt"], tools, False, generation_prompt=True)
        text, ids, mask = _render(tokenizer, template.training, msgs, tools, assistant_only)
        check_rendered(text, row["prompt"], tools, "prompt")
        check_rendered(text, row["completion"], None, "completion")
        k = _prefix(prompt_ids, ids)
        trained = ids[k:] if mask is None else [t if b else IGNORE for t, b in zip(ids[k:], mask[k:], strict=False)]
        labels = [IGNORE] * k + trained
    if assistant_only and all(x == IGNORE for x in labels):
        raise RowError(None, "the chat template marks no token of this row as the assistant's "
                       "(training.assistantOnlyLoss): nothing to learn from")
    return ids, labels
