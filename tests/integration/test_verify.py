"""tandem verify (issue 14): are the primary's and the shadow's data the same?

PostgreSQL: identical tables (one with a composite primary key, one without
a key) under live writes through a shadow-mode tandem: exit 0; then a row
changed, one deleted and one added on the shadow behind tandem's back:
exactly those three rows, exit 1; --sample-rate 10% checks about a tenth of
the chunks.  Redis: the same for keys (a value changed, a key missing on
each side, a TTL far off).  Real servers; tandem verify is the binary's own
subcommand.
"""
import json
import subprocess
import time
import uuid

import redis

from harness.shadow import execute, pgbench_db_popen, shadow_config, wait_drained
from harness.util import free_port


def verify(tandem_bin, primary, shadow, *args, timeout=300):
    done = subprocess.run([tandem_bin, "verify", "--primary", primary, "--shadow", shadow,
                           "--json", "--settle", "500ms", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 1), f"verify failed ({done.returncode}):\n{done.stderr}"
    return done.returncode, json.loads(done.stdout)


def table(result, name):
    return next(t for t in result["tables"] if t["name"] == name)


def dsn(server, db="postgres"):
    return server.socket_dsn(dbname=db)


def test_pg_equal_then_three_rows_differ(tandem_bin, pg_primary, pg_shadow):
    name = "vf_" + uuid.uuid4().hex[:8]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (a int, b text, v text, PRIMARY KEY (a, b))")
        execute(server, f"INSERT INTO {name} SELECT g / 3, 'k' || (g % 3), md5(g::text) "
                        f"FROM generate_series(0, 29999) g")
        execute(server, f"CREATE TABLE {name}_nokey (x int, y text)")
        execute(server, f"INSERT INTO {name}_nokey SELECT g, 'y' FROM generate_series(1, 500) g")
    try:
        rc, res = verify(tandem_bin, dsn(pg_primary), dsn(pg_shadow), "--table", f"{name}*",
                         "--chunk", "1000")
        assert rc == 0 and res["equal"], res
        t = table(res, name)
        assert t["rows_checked"] == 30000 and t["chunks"] == 30 == t["chunks_checked"], t
        assert table(res, f"{name}_nokey")["primary_key"] is False

        execute(pg_shadow, f"UPDATE {name} SET v = 'changed' WHERE a = 100 AND b = 'k1'")
        execute(pg_shadow, f"DELETE FROM {name} WHERE a = 2000 AND b = 'k2'")
        execute(pg_shadow, f"INSERT INTO {name} VALUES (99999, 'k0', 'extra')")
        execute(pg_shadow, f"UPDATE {name}_nokey SET y = 'z' WHERE x = 7")
        rc, res = verify(tandem_bin, dsn(pg_primary), dsn(pg_shadow), "--table", f"{name}*",
                         "--chunk", "1000")
        assert rc == 1 and not res["equal"], res
        t = table(res, name)
        got = sorted((d["key"], d["kind"]) for d in t["differences"])
        assert got == [("100,k1", "changed"), ("2000,k2", "missing_on_shadow"),
                       ("99999,k0", "missing_on_primary")], t
        nokey = table(res, f"{name}_nokey")
        assert nokey["equal"] is False, nokey

        # a tenth of the chunks
        rc, res = verify(tandem_bin, dsn(pg_primary), dsn(pg_shadow), "--table", name,
                         "--chunk", "100", "--sample-rate", "10%")
        t = table(res, name)
        assert t["chunks"] == 300 and 10 <= t["chunks_checked"] <= 60, t
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {name}, {name}_nokey")


def test_pg_equal_under_live_writes(tandem, tandem_bin, pg_primary, pg_shadow):
    """pgbench writes through a shadow-mode tandem while verify runs: what is in
    flight to the shadow is looked at again after --settle, never reported."""
    from harness.shadow import create_database, pgbench_init_db
    db = "verifylive"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    port, admin = free_port(), free_port()
    t = tandem(config_text=shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                         shadow=pg_shadow, workers=1), port=port,
               admin_port=admin)
    bench = pgbench_db_popen(t.port, db, clients=4, seconds=8)
    time.sleep(1)
    rc, res = verify(tandem_bin, dsn(pg_primary, db), dsn(pg_shadow, db), "--table",
                     "pgbench_*", "--exclude", "pgbench_history", "--chunk", "2000",
                     "--settle", "2s")
    out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, err
    assert rc == 0 and res["equal"], res
    assert table(res, "pgbench_accounts")["rows_checked"] == 100000
    wait_drained(t)


def test_redis_keys(tandem_bin, redis_primary, redis_shadow):
    prefix = "vf:" + uuid.uuid4().hex[:6] + ":"
    clients = [redis.Redis(host="127.0.0.1", port=s.port) for s in (redis_primary, redis_shadow)]
    for c in clients:
        for i in range(500):
            c.set(f"{prefix}s{i}", f"v{i}")
        c.hset(f"{prefix}h", mapping={"a": "1", "b": "2"})
        c.sadd(f"{prefix}set", "x", "y", "z")
        c.rpush(f"{prefix}l", "1", "2", "3")
        c.zadd(f"{prefix}z", {"m": 1.5})
        c.set(f"{prefix}ttl", "t", ex=1000)
    urls = [f"redis://127.0.0.1:{s.port}" for s in (redis_primary, redis_shadow)]
    try:
        rc, res = verify(tandem_bin, *urls, "--table", f"{prefix}*")
        assert rc == 0 and res["equal"], res
        assert table(res, "keyspace")["rows_checked"] == 505

        p, s = clients
        s.set(f"{prefix}s1", "changed")
        s.delete(f"{prefix}s2")
        s.set(f"{prefix}extra", "only here")
        s.hset(f"{prefix}h", "b", "3")
        s.expire(f"{prefix}ttl", 10)
        rc, res = verify(tandem_bin, *urls, "--table", f"{prefix}*")
        assert rc == 1
        got = sorted((d["key"], d["kind"]) for d in table(res, "keyspace")["differences"])
        assert got == [(f"{prefix}extra", "missing_on_primary"), (f"{prefix}h", "changed"),
                       (f"{prefix}s1", "changed"), (f"{prefix}s2", "missing_on_shadow"),
                       (f"{prefix}ttl", "changed")], got
    finally:
        for c in clients:
            for k in c.scan_iter(f"{prefix}*"):
                c.delete(k)
