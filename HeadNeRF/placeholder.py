"""Shared entry point of the scripts whose implementation lands with a later issue.

They parse ``--help`` (so the README's commands stay discoverable), then say plainly that
the feature is not implemented yet and exit with status 2: never a stub that pretends to work.
"""

import argparse
import sys


def not_implemented_main(script: str, description: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=script, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_known_args(argv)
    print(f"{script}: not implemented yet in this version; see README 'Status'", file=sys.stderr)
    return 2
