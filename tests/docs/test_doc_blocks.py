"""The docs convention itself: what counts as a command, its status and its sample output."""

from __future__ import annotations

import os
from pathlib import Path

from doc_blocks import Command, Result, blocks, commands, run_commands, unmatched_sample_lines

PAGE = """\
# A page

```console
$ connector-sync add x \\
    --type demo
added connector x (id 1), due now
$ connector-sync test nosuch  # exits 2
connector-sync: error: no connector 'nosuch'
```

```text
$ not a command: a text block is output
```

- In a list:

    ```console title="indented"
    $ echo hi
    hi
    ```
"""


def test_console_blocks_give_commands_statuses_and_sample_output() -> None:
    found = blocks(PAGE)
    assert [(b.language, b.title) for b in found] == [
        ("console", ""),
        ("text", ""),
        ("console", "indented"),
    ]
    first, second = commands(found[0])
    assert first.text == "connector-sync add x \\\n    --type demo"
    assert first.expected_status == 0
    assert first.sample_output == ("added connector x (id 1), due now",)
    assert first.line == 4
    assert second.expected_status == 2
    assert second.sample_output == ("connector-sync: error: no connector 'nosuch'",)
    [indented] = commands(found[2])
    assert (indented.text, indented.sample_output) == ("echo hi", ("hi",))


def result(stdout: str, stderr: str = "") -> Result:
    return Result(status=0, seconds=0.0, stdout=stdout, stderr=stderr)


def test_sample_output_matches_with_any_numbers_and_hosts_and_skips_tables() -> None:
    command = Command(
        text="connector-sync run",
        expected_status=0,
        sample_output=(
            "2026-11-28T16:36:40+0000 INFO synced items: 23 records in 0.33s",
            "┃ Sync ┃ Connector ┃",
            '  "worker": "vm:11768",',
            "...",
        ),
        line=1,
    )
    real = '2031-01-02T03:04:05+0000 INFO synced items: 7 records in 1.5s\n  "worker": "ci-3:42",'
    assert unmatched_sample_lines(command, result("", real), {}) == []
    other = '2031-01-02T03:04:05+0000 INFO synced orders: 7 records in 1.5s\n  "worker": "ci-3:42",'
    assert unmatched_sample_lines(command, result(other), {}) == [command.sample_output[0]]
    assert unmatched_sample_lines(command, result(""), {}) == list(command.sample_output[::2])


def test_sample_output_shows_the_address_the_page_shows() -> None:
    command = Command(
        text="connector-sync list",
        expected_status=3,
        sample_output=("error: database postgresql+psycopg://pg@host:5432/shown is empty",),
        line=1,
    )
    replace = {"postgresql://pg@host:5432/shown": "postgresql://pg@host:5432/cs_test_1"}
    real = "error: database postgresql+psycopg://pg@host:5432/cs_test_1 is empty"
    assert unmatched_sample_lines(command, result("", real), replace) == []
    assert unmatched_sample_lines(command, result("", real), {}) != []


def test_commands_share_one_shell_and_report_each_status(tmp_path: Path) -> None:
    texts = ["export GREETING=hi", "echo $GREETING there", "false  # exits 1", "exit 7", "true"]
    results = tmp_path / "results"
    results.mkdir()
    ran = run_commands(
        [Command(text, 0, (), 1) for text in texts],
        workdir=tmp_path,
        results=results,
        env=dict(os.environ),
        replace={"there": "everywhere"},
        timeout=30,
    )
    statuses = [r.status if r else None for r in ran]
    assert statuses == [0, 0, 1, None, None]  # `exit` ends the shell: no status, nothing after
    assert ran[1] is not None and ran[1].stdout == "hi everywhere\n"
