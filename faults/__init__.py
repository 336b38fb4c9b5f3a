"""The fault report: spotq under faults (its process killed or replaced, the API server hung or restarted, SQS hung
or refusing, duplicate and poison messages, a soak), each scenario on a fresh local environment, counted from the
cluster and the queue. Entry point: ``python -m faults.run`` (``make faults``); see faults/README.md.
"""
