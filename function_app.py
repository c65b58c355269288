"""Azure Functions entry (Python v2 model): two timers, one call each into the detector.

The detector is imported inside each function, so a cold start pays only for azure.functions here.
"""

import azure.functions as func

app = func.FunctionApp()


@app.timer_trigger(schedule="%DETECTOR_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@app.retry(strategy="exponential_backoff", max_retry_count="3", minimum_interval="00:05:00",
           maximum_interval="00:30:00")
def detector_daily(timer: func.TimerRequest) -> None:
    from detector.functions import daily_run

    daily_run(past_due=timer.past_due)


@app.timer_trigger(schedule="%DETECTOR_REDELIVER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def detector_redeliver(timer: func.TimerRequest) -> None:
    from detector.functions import redeliver_run

    redeliver_run(past_due=timer.past_due)
