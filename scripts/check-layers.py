#!/usr/bin/env python3
"""Checks that every #include points down the layers of docs/architecture.md.

Each folder below is one CMake target; a file may include headers of its own folder and of the
folders its layer may use, plus third-party headers the layer is allowed to see. The engine and
the common layers never see gRPC, protobuf or HTTP. Exit 1 naming each include that points
the wrong way.

    scripts/check-layers.py          # from anywhere in the repository
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# folder -> the folders (besides itself) whose headers it may include.
BELOW = {
    "common/base": set(),
    "common/cli": {"common/base"},
    "common/client_security": {"common/cli"},
    "engine/tokenizer": {"common/base"},
    "engine/format": {"common/base"},
    "engine/backend": {"common/base"},
    "engine/cpu": {"engine/backend", "engine/format", "common/base"},
    "engine/cuda": {"engine/cpu", "engine/backend", "engine/format", "common/base"},
    "engine": {"engine/tokenizer", "engine/format", "engine/backend", "engine/cpu",
               "engine/cuda", "common/base"},
    "engine/serving": {"engine"},
    "server": {"engine/serving", "proto"},
    "server/http": {"server"},
    "server/cli": {"server", "server/http", "common/cli", "common/client_security"},
    "client": {"proto", "common/client_security", "engine/tokenizer"},
    "proto": set(),
}
# Third-party prefixes only the API layers may use.
API_ONLY = ("grpcpp/", "grpc/", "google/protobuf/", "sinkserve/v1/", "prometheus/", "spdlog/",
            "httplib", "civetweb", "curl/")


def closure(folder):
    seen, todo = set(), [folder]
    while todo:
        for below in BELOW[todo.pop()]:
            if below not in seen:
                seen.add(below)
                todo.append(below)
    return seen


def folder_of_file(path):
    rel = path.relative_to(ROOT).parent.as_posix()
    while rel and rel not in BELOW:
        rel = rel.rpartition("/")[0]
    return rel or None


def folder_of_include(name):
    if name.startswith(("sinkserve/v1/", "grpc/health/")):
        return "proto"
    rel = pathlib.PurePosixPath(name).parent.as_posix()
    while rel and rel != "." and rel not in BELOW:
        rel = rel.rpartition("/")[0]
    return rel if rel in BELOW else None


def main():
    include = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')
    errors = []
    for top in ("common", "engine", "server", "client"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in (".h", ".cpp", ".cu", ".cuh"):
                continue
            folder = folder_of_file(path)
            allowed = closure(folder) | {folder}
            api = folder in ("server", "server/http", "server/cli", "client", "common/client_security")
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                match = include.match(line)
                if not match:
                    continue
                name = match.group(1)
                where = f"{path.relative_to(ROOT)}:{number}"
                if name.startswith(API_ONLY) and not api:
                    errors.append(f"{where}: {folder} may not use {name} (API layers only)")
                    continue
                target = folder_of_include(name)
                if target and target != "proto" and target not in allowed:
                    errors.append(f"{where}: {folder} may not include {name} ({target} is not "
                                  f"below it)")
                if target == "proto" and "proto" not in allowed:
                    errors.append(f"{where}: {folder} may not include generated API code {name}")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"check-layers: {len(errors)} include(s) point the wrong way "
              "(docs/architecture.md)", file=sys.stderr)
        return 1
    print("check-layers: every include points down the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
