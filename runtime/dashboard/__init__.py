"""The dashboard: a web page of the cluster (nodes, jobs, actors, tasks, a
timeline, logs), served by ``python -m runtime.dashboard`` on the head node.

Started by ``runtime start --head`` and ``runtime.init(include_dashboard=True)``;
port 8265 by default (as Ray's), loopback unless told otherwise.
"""
