"""`spotq audit`: what will go wrong on the Spot nodes before the next wave, read-only.

reading (list the cluster through spotq's KubeClient, paginated) → views (raw objects → typed, pure) → checks
(pure: views → findings) → render (table or JSON). command wires them for the CLI and picks the exit status.
"""
