"""``hami ui``: a read-only web dashboard of the cluster's accelerators, shares and Pending reasons.

:mod:`hami.ui.model` builds the page data from raw nodes, pods and events (with :func:`hami.top.snapshot`),
:mod:`hami.ui.reasons` puts the scheduler's messages in plain words, :mod:`hami.ui.watch` keeps the
cluster's copy current, :mod:`hami.ui.server` serves pages (Jinja2 templates), JSON, server-sent events
and the static files shipped in the wheel (``hami/ui/templates``, ``hami/ui/static``).
"""
