"""Azure Functions entry (Python v2 model). Thin: settings -> detector pipeline -> run summary.

The timer and its pipeline wiring arrive with the deployment issue; the core lives in ``detector``.
"""

import azure.functions as func

app = func.FunctionApp()
