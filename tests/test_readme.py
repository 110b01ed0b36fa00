"""Every `focustune ...` command the README shows parses with the real CLI (flags exist)."""

import re
import shlex

from conftest import REPO
from focustune.cli import build_parser


def _readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part.split("#")[0])
                if words and words[0].endswith("focustune"):
                    commands.append([w for w in words[1:] if not (w.startswith("[") or w.endswith("]"))])
    return commands


def test_readme_commands_parse():
    commands = _readme_commands()
    assert {c[0] for c in commands} >= {"train", "sweep", "tune", "compare", "datasets", "methods"}
    parser = build_parser()
    for args in commands:
        parser.parse_args(args)  # exits (SystemExit) on an unknown flag or a missing argument
