"""Credential scrubbing by pattern (pure): what must never reach a status, an Event, a log or a
termination message, whoever writes it.

The trainer adds the values of the Secrets it received (lft_trainer.scrubbing: by value, whatever
their names); the operator, which never sees those values, applies the patterns to what it copies
from pods (termination messages, the log tail the kubelet falls back to, waiting messages).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

# A value ends at whitespace, a quote, a backslash (JSON escapes) or the next query parameter.
_VALUE = r"[^\s&'\"\\<>]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/@\s:'\"]+:[^/@\s'\"]+@"), rf"\1{REDACTED}@"),
    # Signed URLs: S3 presigned (v4 and v2), GCS signed URLs, Azure SAS (sig=).
    (re.compile(r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
                r"x-goog-credential|signature|awsaccesskeyid|sig)=)" + _VALUE), rf"\1{REDACTED}"),
    # Azure connection strings: AccountKey=...;SharedAccessSignature=...
    (re.compile(r"(?i)\b((?:AccountKey|SharedAccessKey|SharedAccessSignature)=)[^;\s'\"\\]+"), rf"\1{REDACTED}"),
    # HTTP Authorization values.
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # Hugging Face tokens; AWS access key ids.
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    # PEM private keys (GCS service-account JSON), with real or JSON-escaped newlines.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), REDACTED),
    (re.compile(r"(\"private_key(?:_id)?\"\s*:\s*\")[^\"]+"), rf"\1{REDACTED}"),
)


def scrub(text: str, values: Iterable[str] = ()) -> str:
    """`text` without the given secret values (longest first) and without credentials by pattern."""
    for value in values:
        if value and value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
