"""spotq: Spot interruption handler for Kubernetes on AWS."""
