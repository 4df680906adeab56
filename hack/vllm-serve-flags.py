"""Extract what `vllm serve` accepts from a vLLM wheel, without installing or importing it (its imports need a GPU
stack): the option strings of its argument parser, the LoRA ranks --max-lora-rank takes, the HTTP routes of the
LoRA load/unload router, the fields of its load request and the environment variables it reads.

  pip download vllm==X --no-deps -d /tmp/vllm-dl
  python hack/vllm-serve-flags.py /tmp/vllm-dl/vllm-X-*.whl > tests/fixtures/vllm/vllm-X-serve.json

Read statically (ast) from the wheel's sources, the way make_arg_parser (vllm/entrypoints/common/cli_args.py)
builds the parser: the literal option strings of every add_argument call in make_arg_parser and in
EngineArgs.add_cli_args (vllm/engine/arg_utils.py), and `--<field>` for each dataclass field of FrontendArgs and
BaseFrontendArgs (BaseFrontendArgs.add_cli_args adds f"--{key.replace('_', '-')}" for each). The `--no-<flag>`
spellings argparse adds for booleans are not listed."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import zipfile
from pathlib import Path

ARG_UTILS = "vllm/engine/arg_utils.py"
CLI_ARGS = "vllm/entrypoints/common/cli_args.py"
LORA_CONFIG = "vllm/config/lora.py"
LORA_ROUTER = "vllm/entrypoints/serve/lora/api_router.py"
LORA_PROTOCOL = "vllm/entrypoints/serve/lora/protocol.py"
ENVS = "vllm/envs.py"


def literal_options(node: ast.AST) -> set[str]:
    """The "-..." string literals passed positionally to add_argument calls under node."""
    out: set[str] = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument":
            out |= {a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    and a.value.startswith("-")}
    return out


def named(tree: ast.Module, kind: type, name: str) -> ast.AST:
    return next(n for n in ast.walk(tree) if isinstance(n, kind) and n.name == name)


def fields(cls: ast.ClassDef) -> list[str]:
    return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def main(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as z:
        src = {p: ast.parse(z.read(p)) for p in (ARG_UTILS, CLI_ARGS, LORA_CONFIG, LORA_ROUTER, LORA_PROTOCOL, ENVS)}
        version = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        version = next(line.split(":", 1)[1].strip() for line in z.read(version).decode().splitlines()
                       if line.startswith("Version:"))
    engine = named(src[ARG_UTILS], ast.ClassDef, "EngineArgs")
    options = literal_options(named(engine, ast.FunctionDef, "add_cli_args"))
    options |= literal_options(named(src[CLI_ARGS], ast.FunctionDef, "make_arg_parser"))
    for cls in ("BaseFrontendArgs", "FrontendArgs"):
        options |= {"--" + f.replace("_", "-") for f in fields(named(src[CLI_ARGS], ast.ClassDef, cls))}
    ranks = next(n.value for n in ast.walk(src[LORA_CONFIG]) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "MaxLoRARanks" for t in n.targets))
    routes = sorted({f"{d.func.attr.upper()} {d.args[0].value}" for n in ast.walk(src[LORA_ROUTER])
                     if isinstance(n, ast.AsyncFunctionDef) for d in n.decorator_list
                     if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                     and isinstance(d.func.value, ast.Name) and d.func.value.id == "router"})
    env_names = sorted({k.value for n in ast.walk(src[ENVS]) if isinstance(n, ast.Dict) for k in n.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str) and k.value.startswith("VLLM_")})
    return {
        "vllm_version": version,
        "source": {"wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                   "files": [ARG_UTILS, CLI_ARGS, LORA_CONFIG, LORA_ROUTER, LORA_PROTOCOL, ENVS],
                   "how": "hack/vllm-serve-flags.py (ast, no import)"},
        "serve_options": sorted(options),
        "max_lora_ranks": [e.value for e in ranks.slice.elts],
        "lora_routes": routes,
        "load_lora_adapter_fields": fields(named(src[LORA_PROTOCOL], ast.ClassDef, "LoadLoRAAdapterRequest")),
        "env": [e for e in env_names if "LORA" in e],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
