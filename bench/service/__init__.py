"""The whole service over loopback: CreateSession, idle streams, fan-out, webhook throughput.

Three processes, so that CPU can be attributed honestly on a 2-core machine:

* ``vault-service serve`` (the service under test), started with the same environment variables
  an operator would set, logging at WARNING so that logging stays out of the numbers;
* ``vault-service emulator`` (Antom), which the service calls and which signs and posts the
  notifications of the fan-out phase;
* this process, the load generator: gRPC client, stream holder, webhook poster. It is a
  process of its own anyway (the orchestrator), and keeping the load here avoids shipping
  per-call latencies between processes; its CPU, like the emulator's, is read separately.

CPU is read from ``/proc/<pid>/stat`` (utime + stime of every thread, clock ticks) before and
after each timed window, memory from ``VmRSS`` in ``/proc/<pid>/status``; the machine's total
from ``/proc/stat`` shows what other processes took meanwhile ("cores busy (others)", which
must stay ~0 for a run to count). Everything listens on 127.0.0.1. Run from the repository
root:

    .venv/bin/python -m bench.service [--calls 2000] [--streams 1000] [--burst 5000]
        [--auth {none,tokens,mtls}] [--callers 100]

Phases, on a first service instance: CreateSession at each ``--concurrency`` (unique
``vaulting_request_id`` per call; the standard health Check on the same server is the gRPC
floor); ``--streams`` idle StreamResults; ``--fanout-events`` buyer submissions to the emulator,
each reaching the webhook as Antom's signed notification and every open stream as an event;
as many events again with the streams filtered to other vaulting requests (plus one that
matches); then ``--notifications`` signed notifications POSTed straight to the webhook (each
one changes a session created earlier, so each is one SQLite write transaction), the same
notifications again (Antom's retries: recognised, nothing written), and as many new ones with
``--webhook-streams`` filtered streams open. A second, fresh instance takes the ``--burst`` of
stream opens and one more fan-out.

``--auth`` sets how the bench's gRPC calls identify themselves, the way a calling service
would: ``none`` (no identity source, the loopback-only mode), ``tokens`` (a callers file of
``--callers`` entries, every call carrying the bearer token of one of them) or ``mtls`` (TLS with
a client CA; the bench presents a client certificate). Either way the health service is made
non-public (``VAULT_PUBLIC_HEALTH=0``), so that the health Check floor pays the same
authentication as the vault methods. Tokens, keys and certificates are made for the run and
written only to its temporary directory, with the test suite's own helpers (the callers file of
``tests.fixtures.callers``, the PKI of ``tests.fixtures.tls``).

Modules: ``processes`` starts and stops the emulator and the service; ``access`` is how the bench
identifies itself; ``measure`` reads CPU and memory and drives timed windows; ``report`` prints
the tables; ``unary``, ``streams`` and ``webhook`` are the phases; ``__main__`` runs them in order.
"""
