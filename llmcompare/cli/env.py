"""``llmcompare env create|list|remove``: per-backend Python environments (:mod:`llmcompare.envs`)."""

from __future__ import annotations

import argparse

from llmcompare.envs import DEVICES, create, env_dir, envs_root, format_list, list_envs, recipes, remove
from llmcompare.errors import UserError

HELP = "build and list per-backend Python environments (vLLM)"
DESCRIPTION = ("Managed virtual environments for backends whose engine cannot share the main environment. They live"
               " in <cache>/envs/NAME.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="env_command", required=True)
    c = sub.add_parser("create", help="build (or refresh) the environment of one backend")
    c.add_argument("name", help=f"backend name ({', '.join(sorted(recipes())) or 'none'})")
    c.add_argument("--device", choices=DEVICES, default=None,
                   help="which build of the engine (default: cuda when nvidia-smi is on PATH, else cpu)")
    c.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto",
                   help="auto: uv when it is on PATH, else python -m venv and pip")
    c.add_argument("--force", action="store_true", help="delete and rebuild it from scratch")
    c.add_argument("--with", dest="with_requirements", action="append", default=[], metavar="REQUIREMENT",
                   help="install this requirement too, under the same constraints (repeatable)")
    c.add_argument("--extra-index-url", action="append", default=[], metavar="URL",
                   help="another package index, e.g. https://download.pytorch.org/whl/cpu (repeatable)")
    c.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL",
                   help="a folder or page of wheels (repeatable)")
    c.add_argument("--quiet", "-q", action="store_true", help="keep the installer's output in the build log only")
    sub.add_parser("list", help="show the managed environments, their python and engine version")
    r = sub.add_parser("remove", help="delete a managed environment")
    r.add_argument("name")


def run(args: argparse.Namespace) -> int:
    if args.env_command == "create":
        sources = [f for url in args.extra_index_url for f in ("--extra-index-url", url)]
        sources += [f for loc in args.find_links for f in ("--find-links", loc)]
        create(args.name, device=args.device, installer=args.installer, force=args.force,
               with_requirements=args.with_requirements, sources=sources, quiet=args.quiet)
        return 0
    if args.env_command == "list":
        print(format_list(list_envs()))
        return 0
    if args.env_command == "remove":
        if not remove(args.name):
            raise UserError(f"no managed environment {args.name!r} in {envs_root()}")
        print(f"removed {env_dir(args.name)}")
        return 0
    raise UserError(f"unknown env command {args.env_command!r}")


