"""`dspyrl` command line, apart from the library: one module per command, each a thin layer over the library."""

from dspyrl.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
