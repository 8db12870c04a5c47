"""The AIDE control needs a database: written by aide --init only when missing, bounded by a timeout,
moved into place only when the init finished (a stand-in aide script does the writing)."""
from ansible_collections.guardrail.ecs.plugins.module_utils.cis import scan as cis_scan


def _control(tmp_path, body, timeout=30):
    aide = tmp_path / "aide"
    aide.write_text("#!/bin/sh\n" + body)
    aide.chmod(0o755)
    crond = tmp_path / "cron.d"
    crond.mkdir(exist_ok=True)
    (crond / "aide").write_text("0 5 * * * root %s --check\n" % aide)
    return {"id": "6.3.2", "check": "aide_scheduled", "cron_paths": [str(crond / "*")], "timers": [],
            "aide": str(aide), "database": str(tmp_path / "aide.db"), "database_new": str(tmp_path / "aide.db.new"),
            "init": [str(aide), "--init"], "init_timeout": timeout}


def _status(results):
    return {r["id"]: r["status"] for r in results}


def test_a_scheduled_check_without_a_database_fails_and_is_fixed_by_init_once(tmp_path):
    # The schedule alone passed before: dailyaidecheck then fails every night for want of a database.
    control = _control(tmp_path, 'echo "$(date +%%N)" >> %s/runs\necho "@@begin_db" > %s/aide.db.new\n' % (tmp_path, tmp_path))
    results, changed, _scan = cis_scan.apply([control], audit_only=True)
    assert _status(results) == {"6.3.2": "failed"} and not changed
    assert "no AIDE database" in results[0]["evidence"] and not (tmp_path / "aide.db").exists()
    results, changed, _scan = cis_scan.apply([control])
    assert changed and _status(results) == {"6.3.2": "fixed"}, results
    assert (tmp_path / "aide.db").read_text() == "@@begin_db\n" and not (tmp_path / "aide.db.new").exists()
    results, changed, _scan = cis_scan.apply([control])
    assert not changed and _status(results) == {"6.3.2": "pass"}
    assert len((tmp_path / "runs").read_text().splitlines()) == 1


def test_an_init_stopped_by_the_timeout_leaves_no_database_and_is_redone(tmp_path):
    control = _control(tmp_path, 'echo "@@begin_db partial" > %s/aide.db.new\nsleep 30\n' % tmp_path, timeout=1)
    results, changed, _scan = cis_scan.apply([control])
    assert not changed and _status(results) == {"6.3.2": "failed"}  # nothing put in place
    assert "timed out" in results[0]["evidence"] and not (tmp_path / "aide.db").exists()
    fixed = _control(tmp_path, 'echo "@@begin_db" > %s/aide.db.new\n' % tmp_path)
    results, changed, _scan = cis_scan.apply([fixed])
    assert changed and _status(results) == {"6.3.2": "fixed"}
    assert (tmp_path / "aide.db").read_text() == "@@begin_db\n"
