"""Redis shadow mode: a mismatching read is confirmed before it is claimed
(issue 13, "Confirmation"), as PostgreSQL's are.

tandem runs the read again, the client's own request bytes, on both
backends through connections of its own (named tandem-recheck on the
servers), logged in and SELECTed as the client's session was: if the
two replies now agree, the outcome is `transient` (an ordering artefact);
if they still differ after a few attempts, a confirmed `mismatch`.

  - a key different on the shadow: a confirmed mismatch, both values in the
    sample;
  - the same, repaired on the shadow while the re-check runs: transient;
  - the session's SELECTed db and its AUTH are the re-check's too;
  - confirm_per_second 0: no re-check, the mismatch is reported at once;
  - the re-check's shadow connection lost: failed, the claim stands;
  - a write whose reply differs is never run again.

No test asserts a duration: every wait is an upper bound.
"""
import pytest
import redis

from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.shadow import delta, outcomes, rechecks, report, samples_about
from harness.util import wait_until

MIRROR_ALL = {"reads": "100%", "queue": "4MB", "timeout": "5s"}
NAME = b"tandem-recheck"


@pytest.fixture
def pair(redis_primary, redis_shadow):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    return redis_primary, redis_shadow


def start(tandem, primary, shadow, compare=None):
    extra = ""
    if compare:
        extra = "compare { " + " ".join(f"{k} {v};" for k, v in compare.items()) + " }"
    return start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL, listener_extra=extra)


def settle(t, before_out, before_rc, pred, what, timeout=30):
    """Wait until pred(outcome delta, recheck delta) holds; return both deltas."""
    last = []

    def ok():
        last[:] = [delta(outcomes(t, "r"), before_out), delta(rechecks(t, "r"), before_rc)]
        return pred(*last)
    try:
        wait_until(ok, timeout, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; outcomes {last[0] if last else None}, "
                             f"rechecks {last[1] if last else None}") from None
    return last


def verdict(o, r):
    return o["mismatch"] + o["transient"] >= 1


def recheck_ids(server):
    """The ids of the re-check's connections open on SERVER now."""
    return {c["id"] for c in server.client().client_list() if c.get("name") == NAME.decode()}


def test_real_difference_is_a_confirmed_mismatch(tandem, pair):
    primary, shadow = pair
    primary.client().set("rc:k", "alpha")
    shadow.client().set("rc:k", "omega")
    t = start(tandem, primary, shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert tandem_client(t).get("rc:k") == b"alpha"
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, (out, rc)
    assert rc["confirmed"] == 1 and rc["failed"] == 0 and rc["unsupported"] == 0, rc
    samples = samples_about(report(t), "GET")
    assert samples, report(t)["samples"]
    text = str(samples[0])
    assert "alpha" in text and "omega" in text, samples[0]


def test_repaired_while_rechecked_is_transient(tandem, pair):
    """The shadow answered otherwise, then holds the primary's value again (as a
    write reaching it late would make it): the re-check sees them agree."""
    primary, shadow = pair
    primary.client().set("rc:late", "alpha")
    shadow.client().set("rc:late", "late")
    t = start(tandem, primary, shadow)
    c = tandem_client(t)
    c.ping()
    own = recheck_ids(shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert c.get("rc:late") == b"alpha"
    # a re-check connection on the shadow: the mirror's GET answered 'late' already
    wait_until(lambda: recheck_ids(shadow) - own, 20, "the re-check's connection to the shadow",
               interval=0.01)
    shadow.client().set("rc:late", "alpha")
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["transient"] == 1 and out["mismatch"] == 0, (out, rc)
    assert rc["transient"] == 1 and rc["confirmed"] == 0, rc


def test_selected_db_is_rechecked_there(tandem, pair):
    """The key differs in db 3 only: run again in db 0 the two would agree (both
    nil) and it would pass for transient."""
    primary, shadow = pair
    primary.client(db=3).set("rc:db", "alpha")
    shadow.client(db=3).set("rc:db", "omega")
    t = start(tandem, primary, shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert tandem_client(t, db=3).get("rc:db") == b"alpha"
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, (out, rc)
    assert rc["confirmed"] == 1, rc


@pytest.fixture
def acl_pair():
    """Two servers that refuse anyone not logged in; user app on both."""
    servers = [RedisServer(name, password="adminpw",
                           users={"app": "on >apppw ~* +@all"}) for name in ("rc-p", "rc-s")]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()


def test_client_login_is_the_rechecks(tandem, acl_pair):
    """The client logged in as app: the re-check logs in as app too (without
    a login the servers refuse it: failed, not confirmed)."""
    primary, shadow = acl_pair
    primary.client().set("rc:auth", "alpha")
    shadow.client().set("rc:auth", "omega")
    t = start(tandem, primary, shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    c = tandem_client(t, username="app", password="apppw")
    assert c.get("rc:auth") == b"alpha"
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["mismatch"] == 1, (out, rc)
    assert rc["confirmed"] == 1 and rc["failed"] == 0, rc


def test_confirm_off_reports_at_once(tandem, pair):
    primary, shadow = pair
    primary.client().set("rc:off", "alpha")
    shadow.client().set("rc:off", "omega")
    t = start(tandem, primary, shadow, compare={"confirm_per_second": 0})
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert tandem_client(t).get("rc:off") == b"alpha"
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, (out, rc)
    assert sum(rc.values()) == 0, rc


def test_shadow_lost_during_recheck_fails(tandem, pair):
    """The re-check's shadow connection goes away between attempts (the key
    differs for good, so attempts go on): failed, the mismatch stands."""
    primary, shadow = pair
    primary.client().set("rc:lost", "alpha")
    shadow.client().set("rc:lost", "omega")
    t = start(tandem, primary, shadow)
    c = tandem_client(t)
    c.ping()
    own = recheck_ids(shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert c.get("rc:lost") == b"alpha"
    found = []

    def connected():
        found[:] = recheck_ids(shadow) - own
        return found
    wait_until(connected, 20, "the re-check's connection to the shadow", interval=0.01)
    for cid in found:
        shadow.client().client_kill_filter(_id=cid)
    out, rc = settle(t, before_out, before_rc, verdict, "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, (out, rc)
    assert rc["failed"] == 1 and rc["confirmed"] == 0, rc
    # the client's own session goes on
    assert c.get("rc:lost") == b"alpha"


def test_write_is_never_run_again(tandem, pair):
    """INCR answers 2 on the primary, 11 on the shadow: a mismatch, not re-run."""
    primary, shadow = pair
    primary.client().set("rc:n", 1)
    shadow.client().set("rc:n", 10)
    t = start(tandem, primary, shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    assert tandem_client(t).incr("rc:n") == 2
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] >= 1,
                     "the write's outcome")
    assert sum(rc.values()) == 0, rc
    assert primary.client().get("rc:n") == b"2"
    assert shadow.client().get("rc:n") == b"11"
