"""deploy/: the Prometheus alert rules (promtool check + unit tests), the
Grafana dashboard (valid), every metric the rules and the dashboard name
(in a live /metrics: no exemptions), and the Kubernetes sidecar example
(its tandem.conf passes `tandem -t`; probes, Secret, ConfigMap and the
shutdown timings agree with each other)."""
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness.shadow import execute, shadow_config
from harness.tandemproc import parse_metrics
from harness.util import REPO, free_port

DEPLOY = os.path.join(REPO, "deploy")
ALERTS = os.path.join(DEPLOY, "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(DEPLOY, "prometheus", "alerts_test.yml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "tandem-dashboard.json")
SIDECAR = os.path.join(DEPLOY, "kubernetes", "sidecar.yaml")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/deps.sh (Debian's prometheus package)")
    return path


def test_alert_rules_check():
    done = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_fire_on_what_should_page():
    done = subprocess.run([promtool(), "test", "rules", os.path.basename(ALERTS_TEST)],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_severity_and_summary():
    rules = [r for g in yaml.safe_load(open(ALERTS))["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    assert {"TandemShadowValidationLow", "TandemShadowErrorRateHigh",
            "TandemShadowErrorRateCritical", "TandemMirrorLagHigh", "TandemGuardTripped",
            "TandemBackendDown", "TandemShadowSessionsDetached"} <= {a["alert"] for a in alerts}
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical"), a
        assert a["annotations"]["summary"], a


# -- metric names against a live tandem --------------------------------------------------

@pytest.fixture(scope="module")
def live_metric_names(tandem_module, pg_primary, pg_shadow):
    """The metric names of a shadow-mode tandem that served a little traffic."""
    port, admin = free_port(), free_port()
    t = tandem_module(config_text=shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                                shadow=pg_shadow, mirror={"reads": "100%"}),
                      port=port, admin_port=admin)
    with t.connect() as conn:
        conn.execute("SELECT 1")
    names = set()
    for name, _, _ in parse_metrics(t.metrics()):
        names.add(name)
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                names.add(name[:-len(suffix)])
    return names


def metric_names_in(text):
    return set(re.findall(r"\b(tandem_[a-z0-9_]+)", text))


def unknown_metrics(exprs, live):
    named = set()
    for e in exprs:
        named |= metric_names_in(e)
    assert named, "no tandem metric named at all"
    return sorted(n for n in named if n not in live)


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_exprs(d):
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])] + \
        [json.dumps(v.get("query", "")) for v in d["templating"]["list"]]


def test_alerts_name_real_metrics(live_metric_names):
    exprs = [r["expr"] for g in yaml.safe_load(open(ALERTS))["groups"] for r in g["rules"]]
    assert unknown_metrics(exprs, live_metric_names) == []


def test_dashboard_names_real_metrics(live_metric_names):
    assert unknown_metrics(dashboard_exprs(dashboard()), live_metric_names) == []


def test_dashboard_shape():
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "instance", "listener"} <= variables
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


# -- the Kubernetes sidecar ------------------------------------------------------------------

def sidecar_docs():
    with open(SIDECAR) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {d["kind"]: d for d in docs}


def conf_value(text, key):
    m = re.search(rf"^\s*{key}\s+([^;]+);", text, re.M)
    return m.group(1).strip() if m else None


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_sidecar_config_passes_tandem_t(tandem_bin, tmp_path):
    conf = sidecar_docs()["ConfigMap"]["data"]["tandem.conf"]
    path = tmp_path / "tandem.conf"
    path.write_text(conf)
    done = subprocess.run([tandem_bin, "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "configuration is valid" in done.stdout


def test_sidecar_wiring():
    docs = sidecar_docs()
    conf = docs["ConfigMap"]["data"]["tandem.conf"]
    secret = docs["Secret"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"app", "tandem"}
    tandem = containers["tandem"]

    # probes on the admin port the configuration listens on
    admin_listen = re.search(r"admin \{[^}]*listen ([^;]+);", conf).group(1).strip()
    admin_port = int(admin_listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in tandem["ports"]}
    assert ports["admin"] == admin_port == 9090
    assert tandem["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert tandem["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    # the app talks to tandem's listener
    listener = re.search(r"listener pg \{[^}]*listen ([^;]+);", conf).group(1).strip()
    url = {e["name"]: e["value"] for e in containers["app"]["env"]}["DATABASE_URL"]
    assert f"@{listener}/" in url, (listener, url)

    # config from the ConfigMap, token and password from the Secret
    mounts = {m["name"]: m for m in tandem["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_mount = next(m for m in mounts.values()
                     if volumes[m["name"]].get("configMap", {}).get("name") ==
                     docs["ConfigMap"]["metadata"]["name"])
    assert cfg_mount["mountPath"] == "/etc/tandem/tandem.conf"
    assert "/etc/tandem/tandem.conf" in tandem["args"]
    sec_mount = next(m for m in mounts.values()
                     if volumes[m["name"]].get("secret", {}).get("secretName") ==
                     secret["metadata"]["name"])
    assert "subPath" not in sec_mount, "a subPath mount never sees a rotated Secret"
    for key in ("token_file", "password_file"):
        path = conf_value(conf, key)
        assert os.path.dirname(path) == sec_mount["mountPath"], (key, path)
        assert os.path.basename(path) in secret["stringData"], (key, path)
    assert pod["securityContext"]["fsGroup"] == tandem["securityContext"]["runAsUser"]

    # shutdown: preStop, then SIGTERM's drain (shutdown_timeout), all within the grace period
    pre = tandem["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0].endswith("sleep"), pre
    drain = duration_s(conf_value(conf, "shutdown_timeout"))
    grace = pod["terminationGracePeriodSeconds"]
    assert int(pre[1]) + drain < grace, (pre, drain, grace)
