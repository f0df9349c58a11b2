"""The files that make a scheduler start `connector-sync run`: crontab, GitHub Actions workflow,
systemd units, Docker Compose, Kubernetes CronJob (`connector-sync deploy TARGET`)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from importlib import resources
from pathlib import Path

from connector_sync.durations import format_duration
from connector_sync.exceptions import BadInput

#: Python of the container image and of the GitHub Actions runner.
PYTHON_VERSION = "3.12"
DEFAULT_EVERY = 15 * 60
DEFAULT_GRACE = 30
DEFAULT_ENV_FILE = "/etc/connector-sync/env"
#: How much longer than --grace a supervisor waits after SIGTERM before it kills the run:
#: time to record the cancelled syncs and close the database connections.
STOP_MARGIN_SECONDS = 15
#: GitHub Actions starts scheduled workflows at most this often.
GITHUB_MIN_INTERVAL = 5 * 60


class Target(StrEnum):
    crontab = "crontab"
    github_actions = "github-actions"
    systemd = "systemd"
    compose = "compose"
    kubernetes = "kubernetes"


@dataclass(frozen=True)
class DeployOptions:
    """What `deploy` was asked for; None (or empty) means this installation's default."""

    every: float = DEFAULT_EVERY
    limit: int | None = None
    grace: float | None = None
    executable: str | None = None
    workdir: str | None = None
    #: pip requirement specifiers the workflow and the image install.
    install: tuple[str, ...] = ()
    env_file: str | None = None
    log_file: str | None = None
    user: str | None = None
    image: str | None = None


#: The options each target uses beyond --every and --limit; giving another one is an error.
USES: dict[Target, frozenset[str]] = {
    Target.crontab: frozenset({"executable", "workdir", "env_file", "log_file"}),
    Target.github_actions: frozenset({"install"}),
    Target.systemd: frozenset({"grace", "executable", "workdir", "env_file", "user"}),
    Target.compose: frozenset({"grace", "install"}),
    Target.kubernetes: frozenset({"grace", "image"}),
}


@dataclass(frozen=True)
class DeployFile:
    name: str
    text: str


def render(target: Target, options: DeployOptions) -> list[DeployFile]:
    """The files for `target`, ready to install.

    Raises:
        BadInput: an option the target does not use, a path that is not absolute, an
            --every that the target's schedule cannot express.
    """
    for field in fields(DeployOptions):
        given = getattr(options, field.name) not in (None, ())
        if given and field.name not in {"every", "limit"} | USES[target]:
            users = [str(t) for t in Target if field.name in USES[t]]
            raise BadInput(
                f"{_flag(field.name)} does not apply to {target}: it is for {', '.join(users)}"
            )
    return _RENDERERS[target](options)


def as_text(files: Sequence[DeployFile]) -> str:
    """One file as it is; several each after a `# ==> NAME <==` line (a comment in every one)."""
    if len(files) == 1:
        return files[0].text
    return "\n".join(f"# ==> {file.name} <==\n{file.text}" for file in files)


def write(files: Sequence[DeployFile], output: Path) -> list[Path]:
    """Writes one file to `output` (or into it, if it is a directory), several into the
    directory `output` (made if missing); returns the paths written."""
    if len(files) == 1 and not output.is_dir():
        paths = [output]
    else:
        paths = [output / file.name for file in files]
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, file in zip(paths, files, strict=True):
            path.write_text(file.text)
    except OSError as exc:
        raise BadInput(f"--output {output}: cannot write: {exc.strerror or exc}") from None
    return paths


def installed_executable() -> str:
    """The absolute path of the connector-sync command running now (or of this installation's)."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "connector-sync")]
    if os.path.basename(sys.argv[0]) == "connector-sync":
        candidates.insert(0, os.path.abspath(sys.argv[0]))
    candidates += filter(None, [shutil.which("connector-sync")])
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise BadInput(
        "cannot tell where the connector-sync executable is: "
        "give --executable /path/to/connector-sync"
    )


# -- the targets ----------------------------------------------------------------------


def _crontab(options: DeployOptions) -> list[DeployFile]:
    workdir = _path("workdir", _default(options.workdir, os.getcwd))
    env_file = _path("env_file", _default(options.env_file, lambda: DEFAULT_ENV_FILE))
    log_file = _path(
        "log_file", _default(options.log_file, lambda: f"{workdir}/connector-sync.log")
    )
    executable = _path("executable", _default(options.executable, installed_executable))
    command = shlex.join([executable, "--log-format", "json", *_run_args(options)])
    # The group sends errors of cd and of reading the env file to the log too. cron turns
    # an unescaped % into a newline, so every % is written \%.
    line = (
        f"{{ cd {shlex.quote(workdir)} && set -a && . {shlex.quote(env_file)} && set +a "
        f"&& {command}; }} >>{shlex.quote(log_file)} 2>&1"
    ).replace("%", "\\%")
    return [
        _file(
            "connector-sync.crontab",
            every=format_duration(options.every),
            env_file=env_file,
            schedule=_cron_schedule(options.every, Target.crontab),
            command=line,
        )
    ]


def _github_actions(options: DeployOptions) -> list[DeployFile]:
    if options.every < GITHUB_MIN_INTERVAL:
        raise BadInput(
            f"--every {format_duration(options.every)} is too often for GitHub Actions, "
            f"which starts scheduled workflows at most every "
            f"{format_duration(GITHUB_MIN_INTERVAL)}: use --every 5m or more"
        )
    limit = "" if options.limit is None else str(options.limit)
    description = "At most this many connectors" + ("" if limit else " (empty: every due one)")
    # Scheduled runs have no inputs: inputs.limit is empty and the default applies.
    expression = f"inputs.limit || '{limit}'" if limit else "inputs.limit"
    return [
        _file(
            "connector-sync.yml",
            every=format_duration(options.every),
            schedule=_yaml(_cron_schedule(options.every, Target.github_actions)),
            limit_description=_yaml(description),
            limit_default=_yaml(limit),
            python=PYTHON_VERSION,
            install=_install(options),
            limit_expression="${{ " + expression + " }}",
        )
    ]


def _systemd(options: DeployOptions) -> list[DeployFile]:
    executable = _systemd_path("executable", _default(options.executable, installed_executable))
    if re.search(r"\s", executable):
        executable = f'"{executable}"'
    every = format_duration(options.every)
    service = _file(
        "connector-sync.service",
        every=every,
        user=_user(options.user),
        workdir=_systemd_path("workdir", _default(options.workdir, os.getcwd)),
        env_file=_systemd_path("env_file", _default(options.env_file, lambda: DEFAULT_ENV_FILE)),
        exec_start=shlex.join([*_run_args(options), "--grace", _grace(options)]),
        executable=executable,
        stop_timeout=f"{_stop_seconds(options)}s",
    )
    timer = _file("connector-sync.timer", every=every, on_calendar=_on_calendar(options.every))
    return [service, timer]


def _compose(options: DeployOptions) -> list[DeployFile]:
    every = ["--every", format_duration(options.every), "--grace", _grace(options)]
    command = ["--log-format", "json", "run", "--loop", *every, *_limit_args(options)]
    dockerfile = _file("Dockerfile", python=PYTHON_VERSION, install=_install(options))
    compose = _file(
        "compose.yaml",
        image=_yaml(_default_image()),
        command=json.dumps(command),
        stop_grace_period=_yaml(f"{_stop_seconds(options)}s"),
    )
    return [dockerfile, compose]


def _kubernetes(options: DeployOptions) -> list[DeployFile]:
    image = _default(options.image, _default_image)
    if not image.strip() or re.search(r"\s", image):
        raise BadInput(f"--image {image!r}: give an image name such as registry/connector-sync:1.0")
    args = ["--log-format", "json", *_run_args(options), "--grace", _grace(options)]
    return [
        _file(
            "connector-sync.yaml",
            every=format_duration(options.every),
            schedule=_yaml(_cron_schedule(options.every, Target.kubernetes)),
            # A run that starts later than one interval after its time is left to the next.
            starting_deadline=str(int(options.every)),
            stop_grace_seconds=str(_stop_seconds(options)),
            image=_yaml(image),
            args=json.dumps(args),
        )
    ]


_RENDERERS: dict[Target, Callable[[DeployOptions], list[DeployFile]]] = {
    Target.crontab: _crontab,
    Target.github_actions: _github_actions,
    Target.systemd: _systemd,
    Target.compose: _compose,
    Target.kubernetes: _kubernetes,
}


# -- schedules ------------------------------------------------------------------------

_CALENDAR_HINT = (
    "use minutes that divide an hour (1m, 2m, 5m, 10m, 15m, 20m, 30m...), "
    "hours that divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h) or 1d"
)


def _calendar_step(every: float, target: Target) -> tuple[str, int]:
    """`every` as a step of one calendar field, ("minute", 15) for 15m: the only intervals
    that cron, systemd's OnCalendar and Kubernetes repeat evenly."""
    minutes = every / 60
    for unit, count, whole in (("minute", minutes, 60), ("hour", minutes / 60, 24)):
        if 1 <= count < whole and count == int(count) and whole % count == 0:
            return unit, int(count)
    if every == 86400:
        return "day", 1
    raise BadInput(
        f"--every {format_duration(every)} cannot be a {target} schedule: {_CALENDAR_HINT}"
    )


def _cron_schedule(every: float, target: Target) -> str:
    unit, step = _calendar_step(every, target)
    each = "*" if step == 1 else f"*/{step}"
    return {"minute": f"{each} * * * *", "hour": f"0 {each} * * *", "day": "0 0 * * *"}[unit]


def _on_calendar(every: float) -> str:
    unit, step = _calendar_step(every, Target.systemd)
    each = "*" if step == 1 else f"00/{step}"
    return {
        "minute": f"*-*-* *:{each}:00",
        "hour": f"*-*-* {each}:00:00",
        "day": "*-*-* 00:00:00",
    }[unit]


# -- values as each file format needs them ---------------------------------------------


def _run_args(options: DeployOptions) -> list[str]:
    return ["run", *_limit_args(options)]


def _limit_args(options: DeployOptions) -> list[str]:
    return [] if options.limit is None else ["--limit", str(options.limit)]


def _grace(options: DeployOptions) -> str:
    return format_duration(DEFAULT_GRACE if options.grace is None else options.grace)


def _stop_seconds(options: DeployOptions) -> int:
    grace = DEFAULT_GRACE if options.grace is None else options.grace
    return math.ceil(grace) + STOP_MARGIN_SECONDS


def _install(options: DeployOptions) -> str:
    from importlib.metadata import version

    specs = options.install or (f"connector-sync=={version('connector-sync')}",)
    for spec in specs:
        if not spec.strip() or _has_control_character(spec):
            raise BadInput(
                f"--install {spec!r}: give a pip requirement such as connector-sync==1.0"
            )
    return shlex.join(specs)


def _default_image() -> str:
    from importlib.metadata import version

    return f"connector-sync:{version('connector-sync')}"


def _default(value: str | None, default: Callable[[], str]) -> str:
    """The option's value if it was given (even empty: then it is refused), else the default."""
    return default() if value is None else value


def _path(option: str, value: str) -> str:
    """An absolute path that every file format here can quote (no control characters; no
    backslash, which cron cannot pass on before a %)."""
    if not value.startswith("/") or _has_control_character(value) or "\\" in value:
        raise BadInput(
            f"{_flag(option)} {value!r}: give an absolute path without backslashes "
            "or control characters"
        )
    return value


def _user(user: str | None) -> str:
    if user is None:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", user):
        raise BadInput(f"--user {user!r}: give a user name such as connector-sync")
    return user


def _has_control_character(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _yaml(value: str) -> str:
    """A YAML scalar: JSON's double-quoted strings are YAML too, whatever the characters."""
    return json.dumps(value)


def _systemd_path(option: str, value: str) -> str:
    """A path in a unit: systemd refuses quotes in a program's path, and `%` starts a specifier."""
    path = _path(option, value)
    if "'" in path or '"' in path:
        raise BadInput(f"{_flag(option)} {value!r}: systemd takes no quotes in this path")
    return path.replace("%", "%%")


def _file(name: str, **values: str) -> DeployFile:
    """The template `name` with each @{key} replaced by values[key]."""
    template = (resources.files("connector_sync") / "deploy_templates" / name).read_text()
    return DeployFile(name, re.sub(r"@\{([a-z_]+)\}", lambda match: values[match[1]], template))
