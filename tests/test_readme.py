"""The README's command synopsis names only flags the commands have: it is the first thing a new
user copies from."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _synopsis() -> dict[str, set[str]]:
    block = README.read_text().split("## Commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    flags: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        match = re.match(r"onnxopt (\w+)", line.strip())
        if match and match.group(1) not in ("COMMAND",):
            command = match.group(1)
        if command:
            flags.setdefault(command, set()).update(re.findall(r"--[a-z][a-z0-9-]*", line))
    return flags


def test_every_flag_in_the_synopsis_exists(cli):
    synopsis = _synopsis()
    assert {"export", "quantize", "bench", "eval", "prune"} <= set(synopsis)
    missing = []
    for command, flags in synopsis.items():
        code, help_text, _err = cli(command, "--help")
        assert code == 0
        missing += [f"{command} {flag}" for flag in flags if flag not in help_text]
    assert not missing, f"README names flags the commands do not have: {missing}"


def test_the_readme_stays_a_guide_under_20000_characters():
    assert len(README.read_text(encoding="utf-8")) < 20_000
