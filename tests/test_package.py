"""The deployment package (scripts/package): only the app, Linux wheels for the deployed Python, and the
real Azure Functions Python worker indexes it from an empty folder with nothing else on the path.

The worker library is ``azure-functions-runtime`` (PyPI), the worker for Python 3.13+ with the v2 model's
indexer; it is installed without dependencies, so ``azure.functions`` comes from the package. Only the
host's gRPC message classes are stand-ins (see tests/worker_index_probe.py).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ("azure-functions-runtime==1.3.0", "azurefunctions-extensions-base==1.2.0")
APP_FILES = {"function_app.py", "host.json", "requirements.txt"}


def deployed_python_version() -> str:
    match = re.search(r"^var pythonVersion = '([0-9.]+)'", (ROOT / "infra" / "main.bicep").read_text(), re.M)
    assert match, "infra/main.bicep must declare var pythonVersion"
    return match.group(1)


def deployed_python() -> Path:
    version = deployed_python_version()
    candidates = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}"))
    for candidate in candidates:
        if subprocess.run([str(candidate), "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    raise AssertionError(f"Python {version} (the deployed version) is not installed under ~/.pyenv")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "package"), str(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout.strip())
    return out / "detector.zip"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker library, alone (no dependencies), in a folder of its own."""
    target = tmp_path_factory.mktemp("worker")
    done = subprocess.run([str(deployed_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--root-user-action=ignore", "--no-deps", "--target", str(target), *WORKER],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.namelist()


def test_package_holds_the_app_and_its_linux_dependencies_only(package: Path) -> None:
    listing = names(package)
    size_kib = package.stat().st_size // 1024
    print(f"package size: {size_kib} KiB, {len(listing)} files")
    assert size_kib < 30 * 1024
    top = {name.split("/")[0] for name in listing}
    assert top == APP_FILES | {"detector", ".python_packages"}
    assert not [n for n in listing if "__pycache__" in n or n.endswith(".pyc")]
    ours = [n for n in listing if not n.startswith(".python_packages/")]
    for forbidden in ("tests/", "bench/", "node_modules/", ".venv", "local.settings", "infra/", ".git"):
        assert not [n for n in ours if n.startswith(forbidden) or f"/{forbidden}" in n], forbidden
    assert not [n for n in listing if "node_modules/" in n or "/.venv" in n]
    # No OpenTelemetry (README, Self-monitoring: the classic logging path, messages parsed by the alert queries).
    # (azure-core's own azure/core/tracing/opentelemetry.py stays: it is imported only when tracing is turned on.)
    site_packages = ".python_packages/lib/site-packages/"
    shipped_top = {n[len(site_packages):].split("/")[0].lower() for n in listing if n.startswith(site_packages)}
    assert not [name for name in shipped_top if "opentelemetry" in name], sorted(shipped_top)
    assert not [n for n in listing if n.startswith(site_packages + "azure/monitor/opentelemetry")]
    shipped = {n for n in listing if n.startswith("detector/")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "detector").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert shipped == expected
    site = ".python_packages/lib/site-packages/"
    installed = {n[len(site):].split("-")[0].lower().replace("_", "-") for n in listing
                 if n.startswith(site) and n.endswith(".dist-info/METADATA")}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = re.match(r"^([A-Za-z0-9_.-]+)", line.strip())
        if requirement and not line.startswith("#"):
            assert requirement.group(1).lower() in installed
    tag = deployed_python_version().replace(".", "")
    binaries = [n for n in listing if n.endswith(".so")]
    assert binaries, "expected compiled wheels (cryptography, cffi) in the package"
    for binary in binaries:
        assert f"cpython-{tag}-x86_64-linux-gnu" in binary or ".abi3." in binary, binary


def test_real_worker_indexes_the_unpacked_package(package: Path, worker: Path, tmp_path: Path) -> None:
    app = tmp_path / "wwwroot"
    app.mkdir()
    with zipfile.ZipFile(package) as archive:
        archive.extractall(app)
    python = deployed_python()
    state = tmp_path / "state"
    state.mkdir()
    probe = subprocess.run([str(python), "-I", "-S", str(ROOT / "tests" / "worker_index_probe.py"), str(app),
                            str(worker), str(ROOT / "detector" / "sample" / "workspace"), str(state)],
                           capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    result: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["python"] == [int(x) for x in deployed_python_version().split(".")]
    assert result["init_status"] == 1, result["init_error"]  # StatusResult.Success
    assert result["azure_functions_file"].startswith(str(app / ".python_packages"))
    functions = {f["name"]: f for f in result["functions"]}
    assert set(functions) == {"detector_daily", "detector_redeliver"}
    for name, schedule in (("detector_daily", "%DETECTOR_SCHEDULE%"),
                           ("detector_redeliver", "%DETECTOR_REDELIVER_SCHEDULE%")):
        fn = functions[name]
        assert fn["script_file"] == "function_app.py"
        assert fn["raw_bindings"] == [{"direction": "IN", "type": "timerTrigger", "name": "timer",
                                       "schedule": schedule, "runOnStartup": False, "useMonitor": True}]
    assert functions["detector_daily"]["retry"] == {"max_retry_count": "3", "retry_strategy": "exponential_backoff",
                                                    "minimum_interval": "0:05:00", "maximum_interval": "0:30:00"}
    assert functions["detector_redeliver"]["retry"] is None
    assert result["modules_imported"] >= 30
    assert {"status", "alerts", "window"} <= set(result["daily_summary_keys"])


def test_worker_refuses_a_folder_without_the_app(worker: Path, tmp_path: Path) -> None:
    """The probe can fail: without the package there is no azure.functions, and the worker cannot even load."""
    python = deployed_python()
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = subprocess.run([str(python), "-I", "-S", str(ROOT / "tests" / "worker_index_probe.py"), str(empty),
                            str(worker), str(empty), str(empty)], capture_output=True, text=True, timeout=300,
                           check=False, cwd=tmp_path)
    assert probe.returncode != 0
    assert "No module named" in probe.stderr


def test_probe_fails_when_the_package_lacks_a_dependency(package: Path, worker: Path, tmp_path: Path) -> None:
    """function_app imports the detector lazily, so indexing alone would not notice a missing package; the
    probe's import of every module does."""
    import shutil

    app = tmp_path / "wwwroot"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(app)
    shutil.rmtree(app / ".python_packages" / "lib" / "site-packages" / "requests")
    probe = subprocess.run([str(deployed_python()), "-I", "-S", str(ROOT / "tests" / "worker_index_probe.py"),
                            str(app), str(worker), str(ROOT / "detector" / "sample" / "workspace"), str(tmp_path)],
                           capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert probe.returncode != 0
    assert "No module named 'requests'" in probe.stderr


def funcignore_keeps(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    for pattern in patterns:
        directory = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        candidates = parts[:-1] if directory else parts
        if any(fnmatch.fnmatch(part, pattern) for part in candidates):
            return False
    return True


def test_funcignore_publishes_what_the_package_ships(package: Path) -> None:
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    published = {path for path in tracked if funcignore_keeps(path, patterns)}
    shipped = {n for n in names(package) if not n.startswith(".python_packages/")}
    assert published == shipped
    assert not funcignore_keeps("node_modules/x/index.js", patterns)
    assert not funcignore_keeps(".venv/lib/site.py", patterns)


def test_azure_yaml_provisions_infra_and_deploys_the_package(package: Path) -> None:
    import yaml

    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    infra = config["infra"]
    assert infra["provider"] == "bicep"
    assert (ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()
    assert (ROOT / infra["path"] / f"{infra['module']}.bicepparam").is_file()
    service = config["services"]["detector"]
    assert service["host"] == "function"
    assert service["language"] == "python"
    hook = service["hooks"]["prepackage"]["run"]
    assert hook == "bash scripts/package dist"
    # The folder azd deploys is the unpacked package the same script writes beside the zip.
    assert service["dist"] == "dist/app"
    built = package.parent / "app"
    assert sorted(p.name for p in built.iterdir()) == sorted(APP_FILES | {"detector", ".python_packages"})
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    assert f"'azd-service-name': '{next(iter(config['services']))}'" in bicep


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
