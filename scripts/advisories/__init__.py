"""Offline dependency-vulnerability check: a committed advisory snapshot and its evaluator.

pip-audit needs a vulnerability service that this project's machines and CI cannot always reach;
an audit that silently checks nothing is worse than none. The snapshot (``snapshot.json``) holds
the facts of every known advisory for every installed package, so the check runs anywhere, and
records which packages were looked up, so a dependency added without a refresh is caught.
"""
