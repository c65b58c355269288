"""With no Azure credential, a failed token request reads as one line naming what to set, not the ~13-line
report DefaultAzureCredential logs; the report stays available in the debug log (``--verbose``).

Each case runs in its own process, as users run the detector, so every line that reaches stderr is counted
(pytest's log capture would hide the SDK's warnings in-process). The environment holds no credential: no
AZURE_* variables, an empty HOME (no Azure CLI, VS Code or token cache), no ``az``/``pwsh``/``azd`` on PATH,
and the managed identity endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST) on a closed loopback port; a proxy on
that port catches anything that would leave the machine. The CLI queries the Log Analytics fake (which must
see no query); the Function's run goes through ``daily_run`` under a host-like log setup (root at INFO),
where no azure.identity record may appear (azure-core's INFO log of each HTTP request, IMDS's included, is
the host's log level to set, as for every request the SDK sends).
Entra ID itself cannot run here; DefaultAzureCredential and its credentials are the real ones.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.la_fake import LogAnalyticsFake, log_analytics_fake

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = "11111111-2222-3333-4444-555555555555"
WHAT_TO_SET = "no Azure credential gave a token: on a laptop run `az login`"

CLI_CHILD = """
import sys
from azure.identity import DefaultAzureCredential
from detector.cli import main
from detector.credential import ambient_credential
from detector.sources.loganalytics import make_client

credential = DefaultAzureCredential() if sys.argv[1] == "sdk-credential" else ambient_credential()
client = make_client(credential, endpoint={endpoint!r}, connection_verify={ca!r}, retries=0)
sys.exit(main(sys.argv[2:], logs_client=client))
"""

FUNCTION_CHILD = """
import logging, sys
# As the Functions Python worker sets it up: the root logger at INFO, its records forwarded to the host.
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(levelname)s: %(message)s")
from detector.functions import daily_run
try:
    daily_run(past_due=False, env={env!r})
except Exception as exc:  # the host records the failed invocation; the log lines above are what it keeps
    sys.exit(4)
"""


@pytest.fixture(scope="module")
def no_credential(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    yield {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8",
           "AZURE_POD_IDENTITY_AUTHORITY_HOST": nowhere, "HTTPS_PROXY": nowhere, "HTTP_PROXY": nowhere,
           "NO_PROXY": "127.0.0.1,localhost"}
    closed.close()


def _start(code: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def runs(no_credential: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """(exit code, stderr) of each case; the processes run side by side (each waits on the credentials)."""
    work = tmp_path_factory.mktemp("work")
    fake = LogAnalyticsFake(activity=[], ueba=[])
    with log_analytics_fake(fake) as (endpoint, ca):
        cli = CLI_CHILD.format(endpoint=endpoint, ca=ca)
        run = ["run", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z"]
        function_env = {"DETECTOR_WORKSPACE_ID": WORKSPACE, "DETECTOR_STATE_DIR": str(work / "state")}
        closed_tables = no_credential["HTTPS_PROXY"].replace("http://", "https://")
        started = {
            "cli, the SDK's credential alone": _start(cli, ["sdk-credential", *run], no_credential, work),
            "cli": _start(cli, ["detector", *run], no_credential, work),
            "cli --verbose": _start(cli, ["detector", *run, "--verbose"], no_credential, work),
            "function, Log Analytics": _start(FUNCTION_CHILD.format(env=function_env), [], no_credential, work),
            "function, Table Storage": _start(FUNCTION_CHILD.format(env={
                **function_env, "DETECTOR_STATE_DIR": "", "DETECTOR_TABLE_ENDPOINT": closed_tables}), [],
                no_credential, work),
        }
        done = {}
        for name, process in started.items():
            _, stderr = process.communicate(timeout=120)
            done[name] = (process.returncode, stderr)
        queries = list(fake.requests)
    assert queries == []  # no token, so nothing reached the workspace
    return done


def test_without_the_wrapper_the_sdk_report_floods_stderr(runs: dict[str, tuple[int, str]]) -> None:
    # The fault guarded against, shown in this very environment: DefaultAzureCredential's warning.
    code, stderr = runs["cli, the SDK's credential alone"]
    assert code == 4
    assert stderr.count("\n") >= 10, stderr
    assert "EnvironmentCredential" in stderr


def test_the_cli_prints_one_line_naming_what_to_set(runs: dict[str, tuple[int, str]]) -> None:
    code, stderr = runs["cli"]
    assert code == 4
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("detector: run failed: authentication to Log Analytics failed: " + WHAT_TO_SET)
    assert "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET" in stderr
    assert "(code AuthenticationFailed)" in stderr


def test_verbose_keeps_the_sdk_report(runs: dict[str, tuple[int, str]]) -> None:
    code, stderr = runs["cli --verbose"]
    assert code == 4
    lines = stderr.splitlines()
    assert lines[0].startswith("detector.credential: DEBUG: the Azure credential's own report: DefaultAzureCredential")
    assert any("ManagedIdentityCredential" in line for line in lines)
    assert lines[-1] == runs["cli"][1].rstrip("\n")


@pytest.mark.parametrize(("case", "stage_text"), [
    ("function, Log Analytics", "authentication to Log Analytics failed: " + WHAT_TO_SET),
    ("function, Table Storage", "create table detectorallowlist failed (" + WHAT_TO_SET),
])
def test_the_function_logs_no_sdk_report_and_one_failure_line(runs: dict[str, tuple[int, str]], case: str,
                                                               stage_text: str) -> None:
    code, stderr = runs[case]
    assert code == 4, stderr
    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("azure.identity")] == []
    assert not any("EnvironmentCredential" in line for line in lines), stderr
    [failure] = [line for line in lines if line.startswith("detector: ERROR: detector run failed ")]
    assert stage_text in failure


def test_overlapping_token_requests_restore_the_identity_loggers_level_only_after_the_last() -> None:
    import logging
    import threading

    from azure.core.exceptions import ClientAuthenticationError

    from detector.credential import WHAT_TO_SET as ONE_LINE
    from detector.credential import QuietCredential

    identity = logging.getLogger("azure.identity")
    both_inside = threading.Barrier(2)
    release_slow = threading.Event()
    errors: list[str] = []

    class Failing:
        """Stands in for DefaultAzureCredential (Entra ID cannot run here): it fails with the SDK's report."""

        def __init__(self, slow: bool) -> None:
            self.slow = slow

        def get_token(self, *scopes: str, **kwargs: object) -> object:
            both_inside.wait(timeout=10)
            if self.slow:
                release_slow.wait(timeout=10)
            raise ClientAuthenticationError(message="DefaultAzureCredential failed...\nAttempted credentials:")

    def ask(slow: bool) -> None:
        try:
            QuietCredential(Failing(slow)).get_token("scope")
        except ClientAuthenticationError as exc:
            errors.append(exc.message)

    saved = identity.level
    identity.setLevel(logging.INFO)  # an operator's own choice, to be restored
    try:
        fast, slow = threading.Thread(target=ask, args=(False,)), threading.Thread(target=ask, args=(True,))
        fast.start()
        slow.start()
        fast.join(timeout=10)
        assert identity.level == logging.ERROR  # the slow request is still asking: still quiet
        release_slow.set()
        slow.join(timeout=10)
        assert identity.level == logging.INFO
        assert errors == [ONE_LINE, ONE_LINE]
    finally:
        release_slow.set()
        identity.setLevel(saved)
