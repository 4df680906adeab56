"""Row formats (pure): the column mapping, format detection, the row checks and the normalized row.

Accepted shapes (TRL's and the Hugging Face hub's):
- messages: {"messages": [{role, content, tool_calls?, tool_call_id?, name?}, ...], "tools"?: [schema, ...]}
- prompt-completion, standard: {"prompt": str, "completion": str}; conversational: both message lists
  (and "tools"?)
- text: {"text": str}
Content is a string or a list of text parts ([{"type": "text", "text": ...}], concatenated as the chat
templates that accept parts do). Roles: system, developer, user, assistant, tool.

A normalized row keeps everything the chat template reads (tool calls and tool schemas included); a None
value is left out (as apply_chat_template does). Nothing else is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lft_api.spec import ColumnsSpec

ROLES = ("system", "developer", "user", "assistant", "tool")
FORMATS = ("messages", "prompt-completion", "text")
PROMPT_JOIN = "\n\n"  # several prompt columns (Alpaca's instruction and input)

PRESETS: dict[str, dict[str, Any]] = {
    "sharegpt": {"messages": "conversations", "role_key": "from", "content_key": "value",
                 "roles": {"human": "user", "gpt": "assistant", "system": "system", "tool": "tool"}},
    "alpaca": {"prompt": ["instruction", "input"], "completion": "output"},
}


@dataclass(frozen=True)
class ColumnMapping:
    """The effective column mapping (a preset completed by the fields set next to it)."""

    messages: str = "messages"
    prompt: tuple[str, ...] = ("prompt",)
    completion: str = "completion"
    text: str = "text"
    tools: str = "tools"
    role_key: str = "role"
    content_key: str = "content"
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> bool:
        return self == PLAIN


PLAIN = ColumnMapping()  # the canonical names


def mapping_of(columns: ColumnsSpec | None) -> ColumnMapping:
    if columns is None:
        return ColumnMapping()
    merged: dict[str, Any] = dict(PRESETS.get(columns.preset or "", {}))
    for key in ("messages", "prompt", "completion", "text", "tools", "role_key", "content_key"):
        value = getattr(columns, key)
        if value is not None:
            merged[key] = value
    merged["roles"] = {**merged.get("roles", {}), **columns.roles}
    if "prompt" in merged:
        merged["prompt"] = tuple(merged["prompt"])
    return ColumnMapping(**merged)


def type_name(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


class RowError(Exception):
    """A bad row: field (the user's column/key names) and reason (starts with the field)."""

    def __init__(self, fld: str | None, reason: str):
        super().__init__(reason)
        self.field = fld
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------
def detect_format(row: Any, m: ColumnMapping = PLAIN) -> str | None:
    if not isinstance(row, dict):
        return None
    if m.messages in row:
        return "messages"
    if all(c in row for c in m.prompt) and m.completion in row:
        return "prompt-completion"
    if m.text in row:
        return "text"
    return None


def expected_keys(m: ColumnMapping) -> str:
    return f"{m.messages}, {'+'.join(m.prompt)}+{m.completion} or {m.text}"


# ---------------------------------------------------------------------------------------------
# checks + normalization (one pass: a row is checked while it is normalized)
# ---------------------------------------------------------------------------------------------
def _string(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        raise RowError(key, f"{key} is missing")
    if not isinstance(v, str):
        raise RowError(key, f"{key} is a {type_name(v)}, expected a string")
    if not v.strip():
        raise RowError(key, f"{key} is empty")
    return v


def _content(v: Any, f: str) -> str:
    """A string, or the text of a list of text parts."""
    if isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise RowError(f, f"{f} is a {type_name(v)}, expected a string or a list of text parts")
    texts = []
    for i, part in enumerate(v):
        p = f"{f}[{i}]"
        if not isinstance(part, dict):
            raise RowError(p, f"{p} is a {type_name(part)}, expected {{type: text, text}}")
        if part.get("type", "text") != "text":
            raise RowError(f"{p}.type", f"{p}.type {part.get('type')!r} is not supported (text parts only)")
        if not isinstance(part.get("text"), str):
            raise RowError(f"{p}.text", f"{p}.text is {type_name(part.get('text'))}, expected a string")
        texts.append(part["text"])
    return "".join(texts)


def _tool_calls(v: Any, f: str) -> list:
    if not isinstance(v, list) or not v:
        raise RowError(f, f"{f} is {'an empty list' if v == [] else 'a ' + type_name(v)}, expected a list of tool calls")
    for i, call in enumerate(v):
        c = f"{f}[{i}]"
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise RowError(c, f"{c} is a {type_name(call)}, expected {{type: function, function: {{name, arguments}}}}")
        if not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise RowError(f"{c}.function.name", f"{c}.function.name is missing")
        if "arguments" in fn and not isinstance(fn["arguments"], (dict, str)):
            raise RowError(f"{c}.function.arguments",
                           f"{c}.function.arguments is a {type_name(fn['arguments'])}, expected an object or a JSON string")
    return v


def _message(raw: Any, f: str, m: ColumnMapping) -> dict:
    if not isinstance(raw, dict):
        raise RowError(f, f"{f} is a {type_name(raw)}, expected an object with {m.role_key} and {m.content_key}")
    role = raw.get(m.role_key)
    rf, cf = f"{f}.{m.role_key}", f"{f}.{m.content_key}"
    if role is None:
        raise RowError(rf, f"{rf} is missing")
    role = m.roles.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        renamed = " (after dataset.columns.roles)" if m.roles else ""
        raise RowError(rf, f"{rf} {raw.get(m.role_key)!r} is not one of {', '.join(ROLES)}{renamed}")
    out = {k: v for k, v in raw.items() if v is not None and k not in (m.role_key, m.content_key)}
    out["role"] = role
    if "tool_calls" in out:
        if role != "assistant":
            raise RowError(f"{f}.tool_calls", f"{f}.tool_calls on a {role} turn (only assistant turns call tools)")
        _tool_calls(out["tool_calls"], f"{f}.tool_calls")
    content = raw.get(m.content_key)
    if content is None and "tool_calls" in out:
        out["content"] = ""  # a tool-call turn without text
        return out
    if content is None:
        raise RowError(cf, f"{cf} is missing")
    out["content"] = _content(content, cf)
    if not out["content"].strip() and "tool_calls" not in out:
        raise RowError(cf, f"{cf} is empty")
    return out


def _messages(v: Any, f: str, m: ColumnMapping) -> list[dict]:
    if v is None:
        raise RowError(f, f"{f} is missing (a list of {{{m.role_key}, {m.content_key}}})")
    if not isinstance(v, list):
        raise RowError(f, f"{f} is a {type_name(v)}, expected a list of {{{m.role_key}, {m.content_key}}}")
    if not v:
        raise RowError(f, f"{f} is an empty list")
    return [_message(x, f"{f}[{i}]", m) for i, x in enumerate(v)]


def _tools(row: dict, m: ColumnMapping) -> list | None:
    v = row.get(m.tools)
    if v is None:
        return None
    if isinstance(v, str):  # TRL and many hub datasets store the schemas as a JSON string
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            raise RowError(m.tools, f"{m.tools} is a string but not JSON ({exc.msg})") from None
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        raise RowError(m.tools, f"{m.tools} is a {type_name(v)}, expected a list of tool schemas (objects)")
    return v or None


def _no_assistant(msgs: list[dict], f: str) -> None:
    if not any(x["role"] == "assistant" for x in msgs):
        roles = ", ".join(x["role"] for x in msgs)
        raise RowError(f, f"{f} has no assistant turn (roles: {roles}): nothing to learn from")


def _prompt(row: dict, m: ColumnMapping) -> str | list[dict]:
    if len(m.prompt) == 1:
        v = row.get(m.prompt[0])
        return _messages(v, m.prompt[0], m) if isinstance(v, list) else _string(row, m.prompt[0])
    parts = []
    for i, key in enumerate(m.prompt):
        v = row.get(key)
        if v is not None and not isinstance(v, str):
            raise RowError(key, f"{key} is a {type_name(v)}, expected a string")
        if i == 0 and not (v or "").strip():
            raise RowError(key, f"{key} is {'missing' if v is None else 'empty'}")
        if v and v.strip():
            parts.append(v)
    return PROMPT_JOIN.join(parts)


def _prompt_completion(row: dict, m: ColumnMapping) -> dict:
    prompt = _prompt(row, m)
    c = m.completion
    if isinstance(prompt, list):
        if not isinstance(row.get(c), list):
            raise RowError(c, f"{c} is a {type_name(row.get(c))}, but {m.prompt[0]} is a message list: give both as "
                           "message lists or both as strings")
        completion = _messages(row[c], c, m)
        _no_assistant(completion, c)
        out: dict[str, Any] = {"prompt": prompt, "completion": completion}
        tools = _tools(row, m)
        return {**out, "tools": tools} if tools else out
    if isinstance(row.get(c), list):
        raise RowError(c, f"{c} is a message list, but the prompt is a string: give both as message lists "
                       "or both as strings")
    return {"prompt": prompt, "completion": _string(row, c)}


def normalize(row: Any, fmt: str, m: ColumnMapping = PLAIN) -> dict:
    """The normalized row (canonical keys) or RowError naming the user's field and the reason."""
    if not isinstance(row, dict):
        raise RowError(None, f"row is a {type_name(row)}, expected a JSON object")
    if fmt == "text":
        return {"text": _string(row, m.text)}
    if fmt == "prompt-completion":
        return _prompt_completion(row, m)
    msgs = _messages(row.get(m.messages), m.messages, m)
    _no_assistant(msgs, m.messages)
    tools = _tools(row, m)
    return {"messages": msgs, "tools": tools} if tools else {"messages": msgs}


def is_conversational(row: dict) -> bool:
    return "messages" in row or isinstance(row.get("prompt"), list)


def user_field(fld: str | None, m: ColumnMapping) -> str | None:
    """A field named with the canonical keys, in the user's column names (dataset.columns)."""
    if not fld or m.identity:
        return fld
    for canon, user in (("messages", m.messages), ("tools", m.tools), ("completion", m.completion),
                        ("prompt", m.prompt[0]), ("text", m.text)):
        if fld == canon or fld.startswith(canon + "[") or fld.startswith(canon + "."):
            return user + fld[len(canon):]
    return fld


def row_format(norm: dict) -> str:
    """The format of a normalized row."""
    if "messages" in norm:
        return "messages"
    return "prompt-completion" if "prompt" in norm else "text"
