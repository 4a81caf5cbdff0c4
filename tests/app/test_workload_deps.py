"""The workload's dependency set: no Pulumi in it, and everything the workload imports is declared in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from app.workload_guard import BLOCKED_PACKAGES, InfraImportBlocked, is_blocked, no_infra_imports

from .conftest import REPO_ROOT, subprocess_env

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
WORKLOAD = PYPROJECT["project"]["dependencies"]
INFRA = PYPROJECT["project"]["optional-dependencies"]["infra"]

#: Runs what `spotshift api`, `worker`, `migrate` and `verify` import, in a clean interpreter that can
#: import only the stdlib, the project and the modules of the distributions in argv[2]: the image's view.
IMPORT_WORKLOAD = """
import importlib.abc, importlib.machinery, json, site, sys
allowed = set(json.loads(sys.argv[2]))
installed = tuple(site.getsitepackages())
refused = []

class OnlyDeclared(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in allowed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not (spec.origin or "").startswith(installed):
            return None  # the standard library, or missing anyway
        refused.append(name)
        raise ModuleNotFoundError(f"No module named {name!r} (not in the workload set)", name=name)

sys.meta_path.insert(0, OnlyDeclared())
from app.workload_guard import no_infra_imports
with no_infra_imports():
    from app.cli import cli
    from migration.cli import register
    register(cli)
    import app.api.main, app.api.server, app.worker, app.eviction, app.imaging_sandbox
    import app.storage.local, app.storage.gcs, app.storage.azure, app.storage.factory
    import migration.copier, migration.report
    from fastapi.testclient import TestClient
    from app.settings import Settings
    from app.storage import LocalStore
    api = app.api.main.create_app(Settings(LOCAL_STORAGE_PATH=sys.argv[1]), store=LocalStore(sys.argv[1]))
    with TestClient(api) as client:
        assert client.get("/healthz").status_code == 200
print(json.dumps({"loaded": sorted({name.partition(".")[0] for name in sys.modules}), "refused": refused}))
"""
#: Test-only imports of the snippet above (TestClient needs httpx2 from the dev extra).
TEST_ONLY = {"httpx2", "httpcore2", "h11"}


def name_of(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements pull in, transitively (extras followed, markers evaluated)."""
    seen: set[str] = set()
    todo = [(Requirement(text), "") for text in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = name_of(str(requirement))
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for wanted in [""] + sorted(requirement.extras):
            todo.extend((Requirement(text), wanted) for text in dist.requires or [])
    return {key.partition("[")[0] for key in seen}


def test_workload_dependencies_carry_no_pulumi_and_the_infra_extra_carries_it() -> None:
    workload, infra = {name_of(d) for d in WORKLOAD}, {name_of(d) for d in INFRA}

    assert not {name for name in workload if name.startswith("pulumi")}
    assert {"pulumi", "pulumi-gcp", "pulumi-azure-native", "pulumi-docker", "pyyaml"} <= infra
    assert {"fastapi", "uvicorn", "pillow", "google-cloud-storage", "azure-storage-blob", "typer"} <= workload
    assert not {name for name in closure(WORKLOAD) if name.startswith("pulumi") or name == "debugpy"}


def test_the_workload_runs_with_only_its_dependency_set_importable(tmp_path) -> None:
    declared = closure(WORKLOAD) | TEST_ONLY
    allowed = {"app", "migration"} | {
        module
        for module, dists in metadata.packages_distributions().items()
        if {name_of(dist) for dist in dists} & declared
    }

    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WORKLOAD, str(tmp_path), json.dumps(sorted(allowed))],
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, f"the workload needs a module outside its dependency set:\n{done.stderr}"
    seen = json.loads(done.stdout.splitlines()[-1])
    assert not [module for module in seen["loaded"] if is_blocked(module)]
    assert {"fastapi", "PIL", "google", "azure"} <= set(seen["loaded"]), "the probe imported too little to mean much"


@pytest.mark.parametrize("module", sorted(BLOCKED_PACKAGES) + ["migration.resource", "pulumi.dynamic"])
def test_the_guard_refuses_pulumi_and_the_infra_code(module: str) -> None:
    probe = (
        "import sys\n"
        "from app.workload_guard import InfraImportBlocked, no_infra_imports\n"
        "with no_infra_imports():\n"
        f"    try: __import__({module!r})\n"
        "    except InfraImportBlocked as exc: print('blocked:', exc); sys.exit(0)\n"
        "sys.exit(1)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "`infra` extra" in done.stdout


def test_the_guard_lets_other_imports_through_and_is_removed_after_the_block() -> None:
    with no_infra_imports():
        import json as json_again  # noqa: F401  (already loaded: no finder is asked)
        import xml.dom.minidom  # noqa: F401  (a fresh stdlib import passes)

    assert not any(type(finder).__name__ == "_Blocker" for finder in sys.meta_path)
    with pytest.raises(InfraImportBlocked), no_infra_imports():
        __import__("stacks.not_a_module_anyone_has")


def test_worker_command_runs_a_job_without_importing_pulumi(tmp_path) -> None:
    from app.queue import Queue
    from app.storage import LocalStore

    from .images import png_bytes

    store = LocalStore(tmp_path)
    job = Queue(store).submit(png_bytes(), "in.png", "image/png")
    probe = (
        "import sys\n"
        "from app.cli import main\n"
        "sys.argv = ['spotshift', 'worker', '--burst']\n"
        "try: main()\n"
        "except SystemExit as exc: code = exc.code\n"
        "print('pulumi loaded:', sorted(m for m in sys.modules if m.startswith('pulumi')))\n"
        "sys.exit(code)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=subprocess_env(STORAGE_BACKEND="local", LOCAL_STORAGE_PATH=tmp_path, WORKER_POLL_SECONDS=0.05),
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "pulumi loaded: []" in done.stdout
    assert Queue(store).get(job["id"])["status"] == "done"
