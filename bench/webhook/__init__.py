"""``python -m bench.webhook``: the webhook's throughput and latency against a bare server.

Modules: ``bare`` (the anchor server), ``load`` (the raw-socket load generator),
``notifications`` (sessions stored beforehand and their signed notifications), ``__main__``
(the phases and the results page). ``bench.replicas`` reuses ``load`` and ``notifications``.
"""
