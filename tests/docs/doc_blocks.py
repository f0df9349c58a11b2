"""The fenced blocks of the docs' Markdown pages; running the commands of their console blocks.

The convention every page follows: shell commands sit in ```console blocks, each
command line starting with `$ ` (a line ending in `\\` continues on the next line); the
lines after a command, up to the next `$ `, are its sample output. A command ending in
`  # exits N` is expected to exit with status N, any other with 0. Other fences
(```text, ```yaml, ```sql, ```python ...) are file contents or output and are not run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    title: str
    body: str
    line: int  # where the block starts in its page, 1-based


@dataclass(frozen=True)
class Command:
    text: str
    expected_status: int
    sample_output: tuple[str, ...]
    line: int


def pages() -> list[Path]:
    """Every Markdown page of the site, and the README."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def page_id(path: Path) -> str:
    return str(path.relative_to(DOCS if path.is_relative_to(DOCS) else ROOT))


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        info = match["info"].strip()
        language = info.split(" ", 1)[0] if info else ""
        title = re.search(r'title="([^"]*)"', info)
        found.append(
            Block(
                language=language,
                title=title[1] if title else "",
                body=textwrap.dedent(match["body"]),
                line=text.count("\n", 0, match.start()) + 1,
            )
        )
    return found


def commands(block: Block) -> list[Command]:
    """The commands of one console block, with their expected status and sample output."""
    found: list[Command] = []
    lines = block.body.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            index += 1  # output before any command: nothing to run
            continue
        start = index
        parts = [line[2:]]
        while parts[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            parts.append(lines[index])
        index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        text = "\n".join(parts)
        exits = EXITS.search(text)
        found.append(
            Command(
                text=text,
                expected_status=int(exits[1]) if exits else 0,
                sample_output=tuple(output),
                line=block.line + 1 + start,
            )
        )
    return found


def page_commands(path: Path) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    return [c for b in blocks(text) if b.language == "console" for c in commands(b)]


# -- running them ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    status: int
    seconds: float
    stdout: str
    stderr: str


def run_commands(
    commands: list[Command],
    *,
    workdir: Path,
    results: Path,
    env: dict[str, str],
    replace: dict[str, str],
    timeout: float,
) -> list[Result | None]:
    """Runs the commands in order in one bash (so `export` and `cd` carry on), each
    with its own output, after replacing each shown address with the real one.
    A command that bash never reached (an earlier one ended it) has no result."""
    lines = ["set -o pipefail"]
    for number, command in enumerate(commands):
        text = command.text
        for shown, real in replace.items():
            text = text.replace(shown, real)
        out = shlex.quote(str(results / str(number)))
        lines += [
            "started=$EPOCHREALTIME",
            "{",
            text,
            f"}} >{out}.out 2>{out}.err </dev/null",
            f'echo "$? $started $EPOCHREALTIME" >{out}.status',
        ]
    subprocess.run(
        ["bash", "-c", "\n".join(lines) + "\n"],
        cwd=workdir,
        env=env,
        timeout=timeout,
        check=False,
    )
    return [_result(results / str(number)) for number in range(len(commands))]


def _result(base: Path) -> Result | None:
    status_file = base.with_suffix(".status")
    if not status_file.exists():
        return None
    status, started, ended = status_file.read_text().split()
    return Result(
        status=int(status),
        seconds=float(ended) - float(started),
        stdout=base.with_suffix(".out").read_text(errors="replace"),
        stderr=base.with_suffix(".err").read_text(errors="replace"),
    )


DIGITS = re.compile(r"\d+")
HOST_PID = re.compile(r"[\w.#-]+:#")  # a worker's host:pid, once its digits are #
#: Sample lines not compared: blank, `...`, table rows (their widths follow the terminal).
NOT_COMPARED = re.compile(r"^\s*$|^\.\.\.$|[┏┃│└┡┌├━─╇┳]")


def _normal(line: str) -> str:
    return " ".join(HOST_PID.sub("host:#", DIGITS.sub("#", line)).split())


def unmatched_sample_lines(command: Command, result: Result, replace: dict[str, str]) -> list[str]:
    """The lines of a command's sample output (tables and `...` aside) that its real
    output lacks, any run of digits matching any number (ids, times, ports change from
    run to run) and any host:pid a worker."""
    output = result.stdout + "\n" + result.stderr
    for shown, real in replace.items():  # the address as the page shows it, in any scheme
        output = output.replace(real.split("://", 1)[-1], shown.split("://", 1)[-1])
    real_lines = {_normal(line) for line in output.splitlines()}
    return [
        line
        for line in command.sample_output
        if not NOT_COMPARED.search(line) and _normal(line) not in real_lines
    ]
