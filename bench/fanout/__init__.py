"""Stream fan-out: the service's stream index beside a bare grpc.aio server, in one run.

Three processes besides the orchestrator: ``vault-service serve`` (SQLite, no caller identity)
with ``vault-service emulator`` behind it, and the bare server of :mod:`bench.fanout.bare`. The
bench process holds every stream (the same client code on both servers) and measures:

* fan-out latency: N streams open (``--streams``, largest first), one event at a time; for
  the service a session is created first (not timed), then Antom's signed notification is
  POSTed to the webhook; for the bare server the event's message is published; per stream, the
  time from that submit to the event's arrival;
* memory: RSS growth per idle stream when the largest N is opened on each fresh process;
* the webhook under load: signed notifications POSTed at ``--rate`` per second for
  ``--seconds`` while ``--webhook-streams`` streams filtered to other ids are open, beside the
  same with no stream open.

Modules: ``bare`` (the anchor server), ``phases`` (the measurements), ``__main__`` (the run and
its results page under ``bench/results/fanout/``).
"""
