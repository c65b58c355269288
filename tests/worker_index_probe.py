"""Run by tests/test_package.py under the deployed Python with ``-I -S`` (no site-packages at all).

argv: APP_DIR WORKER_DIR SAMPLE_DIR STATE_DIR. The path holds only the unpacked package (the app and its
``.python_packages/lib/site-packages``) and the Azure Functions Python worker library
(``azure-functions-runtime``, installed without dependencies, so ``azure.functions`` comes from the
package). The worker indexes the app exactly as on the platform: ``worker_init_request`` loads
``function_app.py`` from the app folder and ``functions_metadata_request`` returns the function metadata.

Mocked: the host's gRPC message classes (``protos``). The worker receives them from the platform's proxy
worker, which is not published on a package registry; plain records with the proto's enum numbers stand in,
and everything the worker computes is real. Prints one JSON document.
"""

import asyncio
import json
import sys
import types

app_dir, worker_dir, sample_dir, state_dir = sys.argv[1:5]
sys.path[:0] = [app_dir, f"{app_dir}/.python_packages/lib/site-packages", worker_dir]


class Message:
    """A stand-in for one protobuf message class: keeps its fields."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def message(name, **enum_values):
    return type(name, (Message,), enum_values)


protos = types.SimpleNamespace(
    StatusResult=message("StatusResult", Failure=0, Success=1, Cancelled=2),
    WorkerInitResponse=message("WorkerInitResponse"),
    WorkerMetadata=message("WorkerMetadata"),
    FunctionMetadataResponse=message("FunctionMetadataResponse"),
    RpcFunctionMetadata=message("RpcFunctionMetadata"),
    RpcRetryOptions=message("RpcRetryOptions"),
    RpcException=message("RpcException"),
    BindingInfo=message("BindingInfo", undefined=0, string=1, binary=2, stream=3, out=1, inout=2,
                        **{"in": 0}),
)

from azure_functions_runtime import handle_event  # noqa: E402

request = types.SimpleNamespace(
    request=types.SimpleNamespace(worker_init_request=types.SimpleNamespace(capabilities={},
                                                                            function_app_directory=app_dir)),
    properties={"host": "127.0.0.1", "protos": protos})
init = asyncio.run(handle_event.worker_init_request(request))
error = getattr(init.result, "exception", None)
metadata = asyncio.run(handle_event.functions_metadata_request(request))

functions = []
for fn in metadata.function_metadata_results or []:
    retry = fn.retry_options
    functions.append({
        "name": fn.name,
        "script_file": fn.script_file,
        "directory": fn.directory,
        "raw_bindings": [json.loads(b) for b in fn.raw_bindings],
        "retry": None if retry is None else {k: str(v) for k, v in vars(retry).items()},
    })

# The detector itself on this Python, with only the packaged dependencies: every module imports, and
# the daily function's code runs once over the embedded sample (exports, local state).
import importlib  # noqa: E402
import pkgutil  # noqa: E402

import detector  # noqa: E402

modules = sorted(m.name for m in pkgutil.walk_packages(detector.__path__, "detector.") if not m.name.endswith("__main__"))
for name in modules:
    importlib.import_module(name)
from detector.functions import daily_run  # noqa: E402

summary = daily_run(past_due=False, env={"DETECTOR_SOURCE_DIR": sample_dir, "DETECTOR_STATE_DIR": state_dir})

print(json.dumps({
    "python": list(sys.version_info[:2]),
    "init_status": init.result.status,
    "init_error": None if error is None else str(vars(error)),
    "functions": functions,
    "azure_functions_file": sys.modules["azure.functions"].__file__,
    "modules_imported": len(modules),
    "daily_summary_keys": sorted(summary),
}))
