"""What every part of iamdb stands on, and nothing of any database or of AWS: the runtime (clock,
sleep, entropy, environment), deadlines and the current Lambda invocation, reading settings,
logging, telemetry, the one backoff, the step runners (blocking and asyncio), per-event-loop
slots, optional dependencies, SnapStart's hook. Imports only :mod:`iamdb.errors`."""
