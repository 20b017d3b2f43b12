"""The image definition, checked statically (no Docker engine here): stages, user, build-time checks,
and that everything it copies or runs exists."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from tests.deploy.helm import REPO

CONTAINER = REPO / "deployments" / "container"
BUILD_COMMAND = "docker build -f deployments/container/Dockerfile -t nvdra:v0.1.0 ."


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (CONTAINER / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(stage name or index, its instructions) in order."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for word, args in instructions():
        if word == "FROM":
            name = args.split(" AS ")[1] if " AS " in args else str(len(out))
            out.append((name, []))
        elif out:
            out[-1][1].append((word, args))
    return out


def test_multi_stage_build_copies_only_what_it_needs_into_the_final_stage() -> None:
    """A build stage and a toolkit stage feed a final stage, which copies the venv and nvidia-cdi-hook."""
    names = [name for name, _ in stages()]
    assert names[:2] == ["build", "toolkit"]
    assert len(names) == 3
    final = stages()[-1][1]
    copies = [args for word, args in final if word == "COPY"]
    assert any(a.startswith("--from=build /opt/nvdra ") for a in copies)
    assert any(a.startswith("--from=toolkit /usr/bin/nvidia-cdi-hook ") for a in copies)
    toolkit = " ".join(args for _, args in stages()[1][1])
    assert "nvidia-container-toolkit-base" in toolkit


def test_final_user_is_not_root() -> None:
    """The image's default user is unprivileged (numeric, so runAsNonRoot can verify it)."""
    users = [args for word, args in stages()[-1][1] if word == "USER"]
    assert users
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_build_time_version_check_covers_every_console_script() -> None:
    """The final stage runs --version checks and loads every declared console script's module."""
    runs = " ".join(args for word, args in stages()[-1][1] if word == "RUN")
    for tool in ("nvdra --version", "nvdra-webhook --version", "nvidia-cdi-hook --version"):
        assert tool in runs
    assert "entry_points(group='console_scripts')" in runs
    assert "ep.load()" in runs


def test_every_script_named_in_the_image_is_declared_in_pyproject() -> None:
    """Each nvdra* command the Dockerfile names is a console script of the package."""
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    text = (CONTAINER / "Dockerfile").read_text()
    named = set(re.findall(r"\bnvdra(?:-[a-z]+)+\b", text)) | {"nvdra"}
    assert len(named) >= 7
    assert named <= scripts, named - scripts


def test_copied_paths_exist_and_pass_the_ignore_file() -> None:
    """Every COPY source from the context exists and is not filtered out by Dockerfile.dockerignore."""
    rules = [
        line.strip()
        for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    sources = []
    for word, args in instructions():
        if word == "COPY" and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += parts[:-1]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert sent(src.rstrip("/")), src


def test_every_link_in_the_package_points_at_what_the_build_copies() -> None:
    """A symlink under src/ (the packaged CRDs) resolves, inside the repository, to a path the build
    stage copies before it installs the package; else the image would install a dangling link."""
    build = stages()[0][1]
    install = next(i for i, (word, args) in enumerate(build) if word == "RUN" and "pip install" in args)
    copied = [
        p.rstrip("/")
        for word, args in build[:install]
        if word == "COPY" and "--from=" not in args
        for p in [q for q in args.split() if not q.startswith("--")][:-1]
    ]
    links = [p for p in (REPO / "src").rglob("*") if p.is_symlink()]
    assert links
    for link in links:
        target = link.resolve().relative_to(REPO).as_posix()
        assert any(target == c or target.startswith(c + "/") for c in copied), (link, target)


def test_the_init_script_lands_where_the_chart_runs_it() -> None:
    """The chart's init container command is the path the Dockerfile installs the prestart script to."""
    text = (CONTAINER / "Dockerfile").read_text()
    chart = (REPO / "deployments" / "helm" / "nvdra" / "templates" / "kubeletplugin.yaml").read_text()
    assert "/usr/local/bin/kubelet-plugin-prestart.sh" in text
    assert '["/usr/local/bin/kubelet-plugin-prestart.sh"]' in chart


def test_build_command_is_documented() -> None:
    """The build command appears in the Dockerfile, the install docs and the kind build script."""
    assert BUILD_COMMAND in (CONTAINER / "Dockerfile").read_text()
    assert BUILD_COMMAND in (REPO / "docs" / "install.md").read_text()
    kind = (REPO / "demo" / "clusters" / "kind" / "build-dra-driver-gpu.sh").read_text()
    assert "deployments/container/Dockerfile" in kind
