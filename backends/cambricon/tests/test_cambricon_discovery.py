def test_a_node_without_cnmon_is_quiet_but_a_failing_cnmon_warns(caplog, tmp_path):
    """No cnmon on PATH is the normal case on non-Cambricon nodes: INFO, not WARNING (``hami devices``
    must not warn everyone); a cnmon that is installed but fails is worth a warning."""
    import logging

    from hami_cambricon import discovery

    with caplog.at_level(logging.INFO, logger=discovery.log.name):
        assert discovery._table({"cnmon": str(tmp_path / "no-such-cnmon")}) is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    broken = tmp_path / "cnmon"
    broken.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    broken.chmod(0o755)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=discovery.log.name):
        assert discovery._table({"cnmon": str(broken)}) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "boom" in caplog.records[0].getMessage()
