"""The mass-interruption benchmark: many Spot warnings at once on the local environment, measured against
`kubectl drain` run the way aws-node-termination-handler runs it. Entry point: ``python -m bench.run``.
"""
