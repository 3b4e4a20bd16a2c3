"""``llmcompare env create|list|remove|pack``: per-backend Python environments (:mod:`llmcompare.envs`),
and their wheelhouses for hosts with no network (:mod:`llmcompare.envs.pack`, docs/offline.md)."""

from __future__ import annotations

import argparse

from llmcompare.envs import DEVICES, create, env_dir, envs_root, format_list, list_envs, recipes, remove
from llmcompare.envs.pack import DEFAULT_PLATFORM
from llmcompare.errors import UserError

HELP = "build, list and pack per-backend Python environments (vLLM, llama.cpp on CUDA, ...)"
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
    c.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="build it offline from a pack made by 'llmcompare env pack' (pip --no-index), after checking"
                        " every file's sha256 against its pack.json")
    c.add_argument("--quiet", "-q", action="store_true", help="keep the installer's output in the build log only")
    pk = sub.add_parser("pack", help="write a wheelhouse of one backend's environment for a host with no network",
                        description="Download (pip download, for the target's Python and platform) everything the"
                                    " backend's environment needs there, less what the target already has, plus"
                                    " llmcompare as a wheel built from this checkout and a manifest, pack.json."
                                    " Build it there with: llmcompare env create NAME --from DIR (docs/offline.md).")
    pk.add_argument("name", help=f"backend name ({', '.join(sorted(recipes())) or 'none'})")
    pk.add_argument("--output", "-O", required=True, metavar="DIR", help="the folder to write (replaced if it holds a pack)")
    pk.add_argument("--device", choices=DEVICES, default="cuda", help="which recipe (default: cuda)")
    pk.add_argument("--python", dest="python_version", default=None, metavar="X.Y",
                    help="the target's Python (default: this one's)")
    pk.add_argument("--platform", default=DEFAULT_PLATFORM, metavar="TAG",
                    help=f"the target's platform tag, its newest manylinux (default {DEFAULT_PLATFORM}; older tags"
                         " are added)")
    pk.add_argument("--target-has", action="append", default=[], metavar="NAME==VERSION",
                    help="a package the target already has: not packed, and pip resolves around it (repeatable)")
    pk.add_argument("--target-freeze", default=None, metavar="FILE",
                    help="the target's 'pip freeze': every NAME==VERSION in it is treated as --target-has")
    pk.add_argument("--with", dest="with_requirements", action="append", default=[], metavar="REQUIREMENT",
                    help="pack this requirement too (repeatable)")
    pk.add_argument("--llmcompare-wheel", default=None, metavar="FILE",
                    help="ship this wheel of llmcompare instead of building one from the checkout")
    pk.add_argument("--extra-index-url", action="append", default=[], metavar="URL", help="another package index")
    pk.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL", help="a folder of wheels")
    pk.add_argument("--no-index", action="store_true", help="only the --find-links folders (no package index)")
    pk.add_argument("--quiet", "-q", action="store_true", help="keep pip's output in DIR/pack.log only")
    sub.add_parser("list", help="show the managed environments, their python and engine version")
    r = sub.add_parser("remove", help="delete a managed environment")
    r.add_argument("name")


def run(args: argparse.Namespace) -> int:
    if args.env_command in ("create", "pack"):
        sources = [f for url in args.extra_index_url for f in ("--extra-index-url", url)]
        sources += [f for loc in args.find_links for f in ("--find-links", loc)]
    if args.env_command == "pack":
        from llmcompare.envs.pack import pack

        pack(args.name, args.output, device=args.device, python_version=args.python_version, platform=args.platform,
             target_has=args.target_has, target_freeze=args.target_freeze, with_requirements=args.with_requirements,
             sources=[*sources, *(["--no-index"] if args.no_index else [])], llmcompare_wheel=args.llmcompare_wheel,
             quiet=args.quiet)
        return 0
    if args.env_command == "create" and args.from_dir:
        from llmcompare.envs.pack import create_from

        if args.with_requirements or sources:
            raise UserError("--from builds from the pack alone: --with, --extra-index-url and --find-links do not apply"
                            " (pack them: llmcompare env pack NAME --with REQ)")
        create_from(args.name, args.from_dir, device=args.device, force=args.force, quiet=args.quiet)
        return 0
    if args.env_command == "create":
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


