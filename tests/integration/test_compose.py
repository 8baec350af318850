"""docker-compose.yml, Dockerfile and deploy/compose/ hold together.

There is no Docker engine here, so nothing is run: the compose file is
parsed (Debian's python3-yaml) and checked the way `docker compose up` would
trip over it - a service with nothing to run, a build context without its
Dockerfile, a bind mount of a file the repository lacks, two services on one
host port, a depends_on naming no service - and tandem's mounted config must
pass `tandem -t -c` ($TANDEM_BIN, default build/tandem; only that check
is skipped when the binary is absent).  The config names compose services
(postgres-blue, ...) that do not resolve here; the check must not need them
to.
"""
import os
import re
import subprocess
import tempfile

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPOSE = os.path.join(REPO, "docker-compose.yml")
CONTAINER_CONF = "/etc/tandem/tandem.conf"


@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), \
        "docker-compose.yml has no services mapping"
    return doc


def services(compose):
    return compose["services"].items()


def bind_mounts(svc):
    """(host path as written, container path) of each bind mount of SVC."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) < 2:
                continue  # anonymous volume
            source, target = parts[0], parts[1]
            if source.startswith((".", "/", "~")):
                out.append((source, target))
        elif isinstance(v, dict) and v.get("type") == "bind":
            out.append((v["source"], v["target"]))
    return out


def host_path(source):
    return os.path.normpath(os.path.join(REPO, os.path.expanduser(source)))


def named_volumes(svc):
    names = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2 and not parts[0].startswith((".", "/", "~")):
                names.append(parts[0])
        elif isinstance(v, dict) and v.get("type") == "volume" and v.get("source"):
            names.append(v["source"])
    return names


def published_ports(svc):
    """(host ip, host port, protocol) of each port SVC publishes on the host."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published") is None:
                continue
            ip, ports, proto = p.get("host_ip", "0.0.0.0"), str(p["published"]), p.get("protocol", "tcp")
        else:
            spec, _, proto = str(p).partition("/")
            proto = proto or "tcp"
            # [ip:]host:container, where ip may be [v6]
            m = re.fullmatch(r"(?:(\[[^\]]+\]|[0-9.]+):)?([0-9-]+):([0-9-]+)", spec)
            if not m:
                assert re.fullmatch(r"[0-9-]+", spec), f"unreadable port spec {p!r}"
                continue  # container port only: Docker picks an ephemeral host port
            ip, ports = m.group(1) or "0.0.0.0", m.group(2)
        lo, _, hi = ports.partition("-")
        for port in range(int(lo), int(hi or lo) + 1):
            out.append((ip.strip("[]"), port, proto))
    return out


def depends_names(svc):
    d = svc.get("depends_on") or []
    return list(d.keys()) if isinstance(d, dict) else list(d)


def test_every_service_has_image_or_build(compose):
    for name, svc in services(compose):
        assert "image" in svc or "build" in svc, f"service {name!r} has neither image nor build"


def test_build_contexts_have_their_dockerfile(compose):
    builds = 0
    for name, svc in services(compose):
        b = svc.get("build")
        if b is None:
            continue
        builds += 1
        context = b if isinstance(b, str) else b.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile")
        ctx = host_path(context)
        assert os.path.isdir(ctx), f"service {name!r}: build context {context!r} is not a directory"
        assert os.path.isfile(os.path.join(ctx, dockerfile)), \
            f"service {name!r}: {dockerfile!r} missing in build context {context!r}"
    assert builds >= 1, "no service builds tandem from this repository"


def test_bind_mounted_files_exist(compose):
    for name, svc in services(compose):
        for source, target in bind_mounts(svc):
            assert os.path.exists(host_path(source)), \
                f"service {name!r} mounts {source!r} (at {target}) which is not in the repository"


def test_named_volumes_are_declared(compose):
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in services(compose):
        for vol in named_volumes(svc):
            assert vol in declared, f"service {name!r} uses volume {vol!r}, not declared at top level"


def test_host_ports_do_not_collide(compose):
    seen = {}
    for name, svc in services(compose):
        for ip, port, proto in published_ports(svc):
            for (oip, oport, oproto), other in seen.items():
                if (oport, oproto) == (port, proto) and \
                        (ip == oip or "0.0.0.0" in (ip, oip) or "::" in (ip, oip)):
                    pytest.fail(f"host port {proto}/{port} published by both {other!r} and {name!r}")
            seen[(ip, port, proto)] = name
    assert seen, "no service publishes a port"


def test_depends_on_names_exist(compose):
    names = set(compose["services"])
    for name, svc in services(compose):
        for dep in depends_names(svc):
            assert dep in names, f"service {name!r} depends on {dep!r}, which is no service"
            assert dep != name, f"service {name!r} depends on itself"


def tandem_service(compose):
    matches = [(n, s) for n, s in services(compose)
               if any(t == CONTAINER_CONF for _, t in bind_mounts(s))]
    assert len(matches) == 1, f"expected one service mounting {CONTAINER_CONF}, found {len(matches)}"
    return matches[0]


def read_tandem_conf(compose):
    _, svc = tandem_service(compose)
    source = next(s for s, t in bind_mounts(svc) if t == CONTAINER_CONF)
    with open(host_path(source)) as f:
        return f.read()


def conf_values(text, key):
    """Every value of `key VALUE;` in an nginx-style config (comments dropped)."""
    text = re.sub(r"#[^\n]*", "", text)
    return re.findall(r"(?:^|[{;\s])" + re.escape(key) + r"\s+\"?([^\s;\"]+)\"?\s*;", text)


def test_tandem_conf_refers_to_what_compose_provides(compose):
    name, svc = tandem_service(compose)
    text = read_tandem_conf(compose)
    mounted = {t for _, t in bind_mounts(svc)}
    for key in ("token_file", "password_file", "tls_ca_file", "tls_cert", "tls_key"):
        for path in conf_values(text, key):
            assert path in mounted, f"tandem.conf {key} {path} is not mounted into {name!r}"
    assert conf_values(text, "token_file"), \
        "the admin listens beyond loopback, so tandem.conf needs admin { token_file ...; }"
    for addr in conf_values(text, "address"):
        host = addr.rsplit(":", 1)[0]
        assert host in compose["services"], f"backend address {addr} names no compose service"
        assert name in depends_names(compose["services"][host]) or \
            host in depends_names(svc), f"{name!r} does not depend on backend service {host!r}"


def test_prometheus_scrapes_tandem_admin(compose):
    tname, _ = tandem_service(compose)
    admin = [a for a in conf_values(read_tandem_conf(compose), "listen") if a.endswith(":9090")]
    assert admin, "tandem.conf has no admin listen on port 9090"
    prom = [s for _, s in services(compose) if "prom/prometheus" in str(s.get("image", ""))]
    assert len(prom) == 1, "expected one prometheus service"
    source = next(s for s, t in bind_mounts(prom[0]) if t.endswith("prometheus.yml"))
    with open(host_path(source)) as f:
        cfg = yaml.safe_load(f)
    targets = [t for job in cfg["scrape_configs"]
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    assert f"{tname}:9090" in targets, f"prometheus does not scrape {tname}:9090 (targets {targets})"


def test_dockerfile_is_multistage_and_runs_as_non_root():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    assert len(froms) >= 2, "Dockerfile should have a build and a runtime stage"
    final = lines[lines.index(froms[-1]):]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must switch to a non-root USER"
    assert any("tandem.conf" in l for l in final if l.upper().startswith("CMD")), \
        "the runtime stage should default to -c /etc/tandem/tandem.conf"


def test_tandem_accepts_the_mounted_config(compose):
    """`tandem -t -c` on the config as the container sees it: each path that
    is a mount target inside the container becomes its file in the repo."""
    binary = os.environ.get("TANDEM_BIN") or os.path.join(REPO, "build", "tandem")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no tandem binary at {binary}")
    _, svc = tandem_service(compose)
    text = read_tandem_conf(compose)
    for source, target in sorted(bind_mounts(svc), key=lambda m: -len(m[1])):
        text = text.replace(target, host_path(source))
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="compose-tandem-") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([binary, "-t", "-c", f.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, \
        f"tandem -t rejected deploy/compose/tandem.conf (exit {r.returncode}):\n{r.stdout}{r.stderr}"
