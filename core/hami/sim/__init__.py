"""Trace replay on the real scheduler code: ``hami simulate`` and ``bench/packing.py``.

:mod:`trace` reads openb CSVs (and node inventories), :mod:`workload` applies the experiment's
inflation and shuffle, :mod:`engine` replays a workload through
:meth:`hami.scheduler.core.Scheduler.filter`, :mod:`runner` runs and summarises many (policy,
seed) pairs, :mod:`cli` is the command. Needs numpy (and matplotlib for ``--plot``).
"""
