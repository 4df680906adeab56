"""output.push: where the trained adapter is pushed besides the output URI (an OCI registry). Imports only pydantic.

The reference rules are those of the OCI distribution spec (repository name components, tags), with one
restriction: the repository starts with the registry's host (a domain with a dot, localhost, or any host with a
port), as Docker's reference parser tells a host from a path component; Docker Hub short names are not expanded.
The same regular expressions are the CRD's CEL rules (RE2: no look-around) and the pydantic validators.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from pydantic import ConfigDict, Field, field_validator, model_validator

from .spec_base import CelRules, SpecModel
from .tracking_spec import SecretRef

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PORT = r"(?::[0-9]{1,5})"
# host[:port]: a domain with a dot, localhost, an IPv6 literal in brackets (optional port), or a one-label host with
# a port (a Service of the same namespace, e.g. registry:5000).
OCI_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})+{_PORT}?|localhost{_PORT}?|\[[0-9a-fA-F:.]+\]{_PORT}?|{_LABEL}{_PORT})"
# The distribution spec's path: lowercase components separated by "/", each with ".", "_", "__" or dashes inside.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
OCI_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
OCI_REPOSITORY_RE = rf"^{OCI_HOST}/{OCI_PATH}$"
OCI_TAG_RE = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
# Hosts plainHttp may talk to: loopback, private IPv4 (a ClusterIP), a one-label Service name, *.svc, *.local.
OCI_PLAIN_HTTP_HOST_RE = (
    r"^(?:localhost|127(?:\.[0-9]{1,3}){3}|10(?:\.[0-9]{1,3}){3}|192\.168(?:\.[0-9]{1,3}){2}"
    r"|172\.(?:1[6-9]|2[0-9]|3[01])(?:\.[0-9]{1,3}){2}|\[::1\]|[a-z0-9-]+|[a-z0-9.-]+\.(?:svc|local))(?::[0-9]{1,5})?/"
)
MAX_REPOSITORY_LENGTH = 255  # the distribution spec: a repository name is under 256 characters

# The artifact's media types (lft_trainer/storage/oci.py writes them; docs/serving.md documents them).
ADAPTER_ARTIFACT_TYPE = "application/vnd.lft.adapter.v1"
# ORAS's default media type for a file pushed as a layer: `oras pull` writes any layer with a title annotation.
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"


def _cel(regex: str) -> str:
    """A regex as the body of a single-quoted CEL string (backslashes escaped)."""
    return regex.replace("\\", "\\\\")


# OciPushSpec's cross-field rule as CEL (the pydantic twin: _plain_http_only_inside).
OCI_PUSH_RULES: CelRules = [{
    "rule": f"!self.plainHttp || self.repository.matches('{_cel(OCI_PLAIN_HTTP_HOST_RE)}')",
    "message": "output.push.oci.plainHttp is only for a registry on loopback, a private IPv4 address or a cluster "
               "Service (a one-label host, *.svc, *.local)",
    "fieldPath": ".plainHttp",
}]


class OciReference(NamedTuple):
    """A checked repository, split: registry host[:port] and repository path."""

    host: str
    path: str

    @classmethod
    def parse(cls, repository: str) -> "OciReference":
        if not re.match(OCI_REPOSITORY_RE, repository) or len(repository) > MAX_REPOSITORY_LENGTH:
            raise ValueError(repository_error(repository))
        host, _, path = repository.partition("/")
        return cls(host, path)


def repository_error(repository: str) -> str:
    """Why `repository` is not a repository reference this API takes (the most specific reason first)."""
    host, _, path = repository.partition("/")
    if len(repository) > MAX_REPOSITORY_LENGTH:
        return f"is {len(repository)} characters long: at most {MAX_REPOSITORY_LENGTH}"
    if "@" in repository or ":" in path:
        return "must not contain a tag or digest: put the tag in tag (the digest is chosen by the push)"
    if not path or not re.match(rf"^{OCI_HOST}$", host):
        return ("must start with the registry's host: host[:port]/path, e.g. registry.example.com/team/adapters/"
                "phi3-chat (a host with a dot, localhost or a port; Docker Hub names need docker.io/)")
    return ("path components must be lowercase letters and digits, separated by '/', with '.', '_', '__' or "
            "dashes inside a component (the OCI distribution spec)")


def default_tag(name: Optional[str]) -> str:
    """The tag when output.push.oci.tag is unset: the resource's name (a valid tag: lowercase, digits, '-', '.';
    cut to 128 characters), or latest outside Kubernetes."""
    return (name or "latest")[:128]


class OciPushSpec(SpecModel):
    """Push the adapter to an OCI registry as an ORAS artifact: one layer per file, named by its title annotation."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": OCI_PUSH_RULES})

    repository: str = Field(
        min_length=1,
        max_length=MAX_REPOSITORY_LENGTH,
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"self.matches('{_cel(OCI_REPOSITORY_RE)}')",
            "message": "output.push.oci.repository must be host[:port]/path with lowercase path components, without "
                       "a tag or digest, e.g. registry.example.com/team/adapters/phi3-chat",
        }]},
        description=(
            "Repository, starting with the registry's host: registry.example.com/team/adapters/phi3-chat (no tag or "
            "digest: see tag). The host has a dot, is localhost or has a port."
        ),
    )
    tag: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=OCI_TAG_RE,
        description="Tag of the pushed artifact. Unset: the LoRAFineTune's name. status.adapter.oci has the digest.",
    )
    plain_http: bool = Field(
        default=False,
        description=(
            "Talk HTTP, not HTTPS: only for a registry on loopback, a private IPv4 address or a Service of the "
            "cluster (a one-label host, *.svc, *.local)."
        ),
    )
    credentials_secret_ref: Optional[SecretRef] = Field(
        default=None,
        description=(
            "Secret whose keys become the trainer's environment: LFT_OCI_USERNAME and LFT_OCI_PASSWORD (basic auth, "
            "or exchanged for a bearer token when the registry asks). Unset: anonymous, unless the storage Secret "
            "has those keys. Never read by the operator."
        ),
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        OciReference.parse(v)
        return v

    @model_validator(mode="after")
    def _plain_http_only_inside(self) -> "OciPushSpec":
        if self.plain_http and not re.match(OCI_PLAIN_HTTP_HOST_RE, self.repository):
            raise ValueError(
                "plainHttp is only for a registry on loopback, a private IPv4 address or a cluster Service "
                f"(a one-label host, *.svc, *.local), not {self.repository.partition('/')[0]}"
            )
        return self

    def reference(self, name: Optional[str]) -> str:
        """repository:tag, the tag defaulting to the resource's name."""
        return f"{self.repository}:{self.tag or default_tag(name)}"


class PushSpec(SpecModel):
    """Where the adapter is pushed after it is uploaded to output.uri."""

    oci: OciPushSpec = Field(description="An OCI registry (ORAS artifact: adapter_config.json, the safetensors...).")
