"""`policy-site build`: one build command for either generator, MkDocs (with the `policy` plugin) or Zensical.

    python -m site_src.build [-f mkdocs.yml] [--generator mkdocs|zensical] [-d SITE_DIR] [--strict]

The default generator is MkDocs while it is installed (with Material, whose end of life is 2027-05-05), else
Zensical; the log says which. Both give the reader the same site (see the README's "Choosing a generator").
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

GENERATORS = ("mkdocs", "zensical")
log = logging.getLogger("policy_site")


class BuildError(Exception):
    """The build failed; the message says why (one sentence naming the file or option)."""


def default_generator() -> str:
    """MkDocs while it (and Material) is installed, else Zensical."""
    if importlib.util.find_spec("mkdocs") is not None and importlib.util.find_spec("material") is not None:
        return "mkdocs"
    return "zensical"


def check_generator(generator: str) -> None:
    """Refuse a generator that is not installed, saying how to install it."""
    module = "material" if generator == "mkdocs" else "zensical"
    if importlib.util.find_spec(module) is None:
        extra = "" if generator == "mkdocs" else "[zensical]"
        raise BuildError(f"{generator} is not installed; install it with pip install 'policy-site{extra}'.")


def setup_logging(verbose: bool = False) -> None:
    """MkDocs' log format for both generators ("WARNING -  docs/privacy.md: ..."), on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)-7s -  %(message)s"))
    for name in ("mkdocs", "policy_site"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_policy_site", False) for h in logger.handlers):
            handler._policy_site = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False


def build(config_file: Path, *, generator: str | None = None, site_dir: Path | None = None, strict: bool = False) -> str:
    """Build the site with ``generator`` (default: default_generator()); returns the generator used."""
    generator = generator or default_generator()
    if generator not in GENERATORS:
        raise BuildError(f"unknown generator {generator!r}; choose mkdocs or zensical.")
    check_generator(generator)
    site_dir = site_dir.resolve() if site_dir else None  # from the working directory, under both generators
    if not config_file.is_file():
        raise BuildError(f"{config_file}: no such file; pass the site's mkdocs.yml with -f.")
    log.info(f"Building with {generator}" + (" (the default while MkDocs is installed)" if generator == "mkdocs" else ""))
    if generator == "mkdocs":
        _build_mkdocs(config_file, site_dir, strict)
    else:
        from .zensical_build import BuildFailed, build as zensical_build

        try:
            zensical_build(config_file, site_dir, strict=strict)
        except BuildFailed as e:
            raise BuildError(str(e)) from None
    return generator


def _build_mkdocs(config_file: Path, site_dir: Path | None, strict: bool) -> None:
    """`mkdocs build` in this process: the plugin does the site's work."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    try:
        config = load_config(str(config_file), site_dir=str(site_dir) if site_dir else None, strict=strict)
        config.plugins.on_startup(command="build", dirty=False)
        try:
            mkdocs_build(config)
        finally:
            config.plugins.on_shutdown()
    except MkDocsException as e:
        raise BuildError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="policy-site build", description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--config-file", type=Path, default=Path("mkdocs.yml"))
    parser.add_argument("--generator", choices=GENERATORS)
    parser.add_argument("-d", "--site-dir", type=Path)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        build(args.config_file, generator=args.generator, site_dir=args.site_dir, strict=args.strict)
    except BuildError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
