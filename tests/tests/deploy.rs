//! `deploy/` checked against the switch it deploys: HAProxy's and Prometheus' own validators
//! (each test skips with a message when its tool is missing), every metric the dashboard and the
//! alert rules query exists in a running switch's /metrics, the Compose and Kubernetes YAML parse
//! and agree with each other and with the switch's configuration (the PostgreSQL store's wiring
//! included), Compose's one-shot import script run for real against a local PostgreSQL (skips
//! without one), and PROXY protocol v2 on the ISO listener over loopback. The rolling restart
//! and the replica crash behind HAProxy are `rolling_restart.rs`. No Docker engine or Kubernetes
//! runs here: the YAML is parsed and cross-checked, never deployed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use serde_norway::Value;
use tests::{luhn_pan, Client, Req, TestSwitch};
use tokio::io::AsyncWriteExt;

fn repo() -> PathBuf {
    tests::replicas::workspace_root()
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `tool` (see [`tests::replicas::which`]), or `None` after [`tests::skip`] said why.
fn which(tool: &str, test: &str, install: &str) -> Option<PathBuf> {
    let found = tests::replicas::which(tool);
    if found.is_none() {
        tests::skip(format_args!("{test}: {tool} not installed ({install})"));
    }
    found
}

/// `KEY=VALUE` lines; `#` comments and blank lines skipped.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The `"${VAR}"` names haproxy.cfg takes from the environment.
fn haproxy_vars(cfg: &str) -> BTreeSet<String> {
    cfg.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split("\"${").skip(1))
        .filter_map(|rest| rest.split_once("}\"").map(|(name, _)| name.to_owned()))
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut v: Value = serde_norway::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
    v
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v:?}"))
}

fn int(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: expected a number, found {v:?}"))
}

/// A switch config file as the switch reads it (`Config::from_file` + `validate`).
fn switch_config(toml_text: &str) -> switch::Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("switch.toml");
    std::fs::write(&path, toml_text).expect("write");
    let config = switch::Config::from_file(&path).expect("parses as a switch config");
    config.validate().expect("a valid switch config");
    config
}

// ===== HAProxy =====

#[test]
fn haproxy_config_is_valid_with_the_loopback_values() {
    let cfg = deploy("haproxy/haproxy.cfg");
    let env = env_file(&deploy("haproxy/loopback.env"));
    let vars = haproxy_vars(&read(&cfg));
    assert!(vars.contains("SWITCH_1_ISO"), "{vars:?}");
    for var in &vars {
        assert!(env.contains_key(var), "loopback.env lacks {var}");
    }
    let Some(haproxy) = which("haproxy", "haproxy -c", "apt-get install haproxy") else {
        return;
    };
    let check = |env: &BTreeMap<String, String>| {
        Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .output()
            .expect("run haproxy -c")
    };
    let out = check(&env);
    assert!(
        out.status.success(),
        "haproxy -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: without the variables the same file is refused.
    let mut partial = env.clone();
    partial.remove("SWITCH_2_ISO");
    assert!(
        !check(&partial).status.success(),
        "haproxy -c passed with SWITCH_2_ISO unset"
    );
}

// ===== Prometheus =====

#[test]
fn prometheus_config_rules_and_rule_tests_pass_promtool() {
    let Some(promtool) = which("promtool", "promtool checks", "apt-get install prometheus") else {
        return;
    };
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(deploy("prometheus"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ===== Metric names in the dashboard and the alert rules =====

/// metric name -> label name -> values seen, from a Prometheus text exposition.
type Exposition = HashMap<String, HashMap<String, HashSet<String>>>;

fn parse_exposition(body: &str) -> Exposition {
    let mut out = Exposition::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            for pair in line[name_end + 1..close].split("\",") {
                let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                labels
                    .entry(k.to_owned())
                    .or_default()
                    .insert(v.trim_end_matches('"').to_owned());
            }
        }
    }
    out
}

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
/// Non-switch series a query may use.
const OTHER_SERIES: [&str; 1] = ["up"];
const KEYWORDS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Checks one PromQL expression against a switch's exposition: every `switch_*` series exists,
/// every label it matches or groups by exists on it, and every literal label value it matches
/// is one the switch exposes. Returns the switch series used.
fn check_promql(expr: &str, exposition: &Exposition, problems: &mut Vec<String>) -> Vec<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut used: Vec<String> = Vec::new();
    let mut grouping: Vec<String> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == b'$' {
            // Numbers, durations (10m), Grafana variables.
            while i < b.len() && (ident(b[i]) || b[i] == b'.' || b[i] == b'$') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            let next_char = b.get(next).copied();
            if GROUPING.contains(&word) {
                if next_char == Some(b'(') {
                    let close = expr[next..].find(')').map_or(b.len(), |p| next + p);
                    grouping.extend(
                        expr[next + 1..close]
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close;
                }
                continue;
            }
            if KEYWORDS.contains(&word) || next_char == Some(b'(') {
                continue;
            }
            let known = exposition.get(word);
            if word.starts_with("switch_") {
                if known.is_none() {
                    problems.push(format!("{word}: not in a running switch's /metrics"));
                }
                used.push(word.to_owned());
            } else if !OTHER_SERIES.contains(&word) {
                problems.push(format!(
                    "{word}: not a switch metric nor one of {OTHER_SERIES:?}"
                ));
            }
            if next_char != Some(b'{') {
                continue;
            }
            // Label matchers: name op "value", ...
            i = next + 1;
            loop {
                i = skip_ws(i);
                if i >= b.len() || b[i] == b'}' {
                    break;
                }
                let l_start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let label = &expr[l_start..i];
                i = skip_ws(i);
                let op_start = i;
                while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
                    i += 1;
                }
                let op = &expr[op_start..i];
                i = skip_ws(i);
                let quote = b.get(i).copied().unwrap_or(b'"');
                let v_start = i + 1;
                i = v_start;
                while i < b.len() && b[i] != quote {
                    i += 1;
                }
                let value = &expr[v_start.min(b.len())..i.min(b.len())];
                i = skip_ws(i + 1);
                if b.get(i) == Some(&b',') {
                    i += 1;
                }
                if TARGET_LABELS.contains(&label) || label.is_empty() {
                    continue;
                }
                let Some(labels) = known else { continue };
                let Some(values) = labels.get(label) else {
                    problems.push(format!("{word}: no label {label}"));
                    continue;
                };
                let literal = |v: &str| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                let wanted: Vec<&str> = match op {
                    "=" | "!=" => vec![value],
                    "=~" | "!~" if value.split('|').all(literal) => value.split('|').collect(),
                    _ => Vec::new(),
                };
                for w in wanted.into_iter().filter(|w| !w.is_empty()) {
                    if !values.contains(w) {
                        problems.push(format!("{word}: {label}=\"{w}\" is never exposed"));
                    }
                }
            }
        }
        i += 1;
    }
    for label in grouping {
        let on_a_series = used.iter().any(|m| {
            exposition
                .get(m)
                .is_some_and(|labels| labels.contains_key(&label))
        });
        if !on_a_series && !TARGET_LABELS.contains(&label.as_str()) {
            problems.push(format!("grouping by {label}: no series in `{expr}` has it"));
        }
    }
    used
}

fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    out
}

fn alert_exprs(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            out.push((name.to_owned(), text(&rule["expr"], name).to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_only_metrics_a_running_switch_exposes() {
    let pan = luhn_pan("411111900000001");
    let sw = TestSwitch::start(
        &format!("pan,expiry,status,currency,balance,daily_limit\n{pan},3012,active,840,100.00,1000.00\n"),
        "order_id,merchant_id,amount,currency,status\n",
    )
    .await;
    let mut c = sw.client().await;
    assert_eq!(
        c.call("0200", &Req::financial(&pan, "000000", 100, 1).list())
            .await
            .code(),
        "00"
    );
    let (status, body) = sw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let exposition = parse_exposition(&body);
    assert!(exposition.contains_key("switch_messages_total"), "{body}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/dashboards/switch.json")))
            .expect("dashboard JSON parses");
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let panel_exprs = dashboard_exprs(&dashboard);
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");
    for (source, expr) in panel_exprs.iter().chain(alert_exprs(&rules).iter()) {
        let mut here = Vec::new();
        let series = check_promql(expr, &exposition, &mut here);
        if series.is_empty() && !expr.contains("up{") {
            here.push("queries no switch series".to_owned());
        }
        problems.extend(here.into_iter().map(|p| format!("{source}: {p}")));
        used.extend(series);
    }
    // The template variable's query too.
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let query = var["definition"].as_str().unwrap_or_default();
        for word in query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("switch_"))
        {
            if !exposition.contains_key(word) {
                problems.push(format!("variable {}: {word} not exposed", var["name"]));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // What the dashboard is for: each of these is charted.
    for needed in [
        "switch_messages_total",
        "switch_decision_duration_seconds_bucket",
        "switch_connections_open",
        "switch_requests_in_flight",
        "switch_shard_queue_depth",
        "switch_format_errors_total",
        "switch_store_batch_duration_seconds_bucket",
        "switch_store_retries_total",
        "switch_store_errors_total",
    ] {
        assert!(used.contains(needed), "nothing charts {needed}");
    }
    let all: String = panel_exprs.iter().map(|(_, e)| e.as_str()).collect();
    for q in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "histogram_quantile(0.999,",
    ] {
        assert!(all.contains(q), "no {q} panel");
    }

    // The checker itself finds what it should.
    let mut found = Vec::new();
    check_promql(
        r#"sum by (mti, nope) (rate(switch_messagez_total{code="07"}[5m])) + switch_messages_total{code="07", colour="red"} + node_load1"#,
        &exposition,
        &mut found,
    );
    assert_eq!(found.len(), 5, "{found:#?}");
}

// ===== Compose, Kubernetes, the container's defaults =====

#[test]
fn container_defaults_are_a_valid_switch_config() {
    let c = switch_config(&read(&deploy("switch.toml")));
    assert!(c.listen.ip().is_unspecified(), "listen on every interface");
    assert!(c.admin_listen.ip().is_unspecified());
    assert_eq!(c.data_dir, Path::new("/var/lib/switch"));
    let dockerfile = read(&deploy("Dockerfile"));
    for needed in [
        "cargo build --release --locked -p switch -p loadgen",
        "deploy/switch.toml /out/etc/switch/switch.toml",
        "ENV SWITCH_CONFIG=/etc/switch/switch.toml",
        "USER 65532:65532",
        r#"HEALTHCHECK"#,
        r#""/usr/local/bin/switch", "healthcheck", "--admin", "127.0.0.1:"#,
        "EXPOSE 8583 9583",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed:?}");
    }
    assert!(dockerfile.contains(&format!("127.0.0.1:{}\"]", c.admin_listen.port())));
    assert!(deploy("Dockerfile.dockerignore").is_file());
}

fn seconds(v: &Value, what: &str) -> u64 {
    let s = text(v, what);
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {s:?} is not N s"))
}

#[test]
fn compose_parses_and_agrees_with_haproxy_prometheus_and_the_image() {
    let compose = yaml(&deploy("compose.yaml"));
    let defaults = switch_config(&read(&deploy("switch.toml")));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for needed in [
        "switch-1",
        "switch-2",
        "switch-3",
        "haproxy",
        "postgres",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(needed), "no service {needed}: {names:?}");
    }
    let cfg = read(&deploy("haproxy/haproxy.cfg"));
    assert!(cfg.contains("send-proxy-v2") && cfg.contains("balance leastconn"));
    assert!(cfg.contains("mode tcp") && cfg.contains("uri /readyz"));
    let haproxy_env = &compose["services"]["haproxy"]["environment"];
    for var in haproxy_vars(&cfg) {
        assert!(
            haproxy_env[var.as_str()].as_str().is_some(),
            "compose haproxy environment lacks {var}"
        );
    }
    let prometheus = yaml(&deploy("prometheus/prometheus.yml"));
    let switch_job = prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("switch"))
        .expect("a `switch` scrape job (the alerts use job=\"switch\")");
    let targets: BTreeSet<&str> = switch_job["static_configs"][0]["targets"]
        .as_sequence()
        .expect("targets")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let postgres = &compose["services"]["postgres"];
    let import = &compose["services"]["import"];
    check_postgres_and_import(&compose, postgres, import);
    for n in 1..=3 {
        let name = format!("switch-{n}");
        let s = &compose["services"][name.as_str()];
        assert_eq!(
            text(&s["build"]["dockerfile"], "dockerfile"),
            "deploy/Dockerfile"
        );
        assert!(deploy(text(&s["build"]["context"], "context"))
            .join("deploy/Dockerfile")
            .is_file());
        assert_eq!(
            text(&s["environment"]["SWITCH_PROXY_PROTOCOL"], "proxy"),
            "true",
            "HAProxy sends PROXY v2: {name} must require it"
        );
        assert!(
            text(&s["environment"]["SWITCH_STORE"], "store").starts_with("postgres://"),
            "{name}: the PostgreSQL store (issue 6)"
        );
        assert_eq!(
            s["environment"]["SWITCH_STORE"], import["environment"]["SWITCH_STORE"],
            "{name} and the import must use one store"
        );
        assert_eq!(
            s["environment"]["PGPASSWORD"], postgres["environment"]["POSTGRES_PASSWORD"],
            "{name}: PGPASSWORD is PostgreSQL's password"
        );
        assert_eq!(
            text(
                &s["depends_on"]["postgres"]["condition"],
                "depends_on postgres"
            ),
            "service_healthy",
            "{name} starts once PostgreSQL is ready"
        );
        assert_eq!(
            text(&s["depends_on"]["import"]["condition"], "depends_on import"),
            "service_completed_successfully",
            "{name} starts once the schema and the cards are there"
        );
        assert!(
            seconds(&s["stop_grace_period"], "stop_grace_period") > defaults.grace_period_secs,
            "{name}: docker must wait for the drain"
        );
        let check = s["healthcheck"]["test"].as_sequence().expect("healthcheck");
        assert!(check.iter().any(|a| a.as_str() == Some("healthcheck")));
        assert_eq!(
            text(&haproxy_env[format!("SWITCH_{n}_ISO").as_str()], "iso"),
            format!("{name}:{}", defaults.listen.port())
        );
        assert_eq!(
            text(
                &haproxy_env[format!("SWITCH_{n}_ADMIN_PORT").as_str()],
                "admin"
            ),
            defaults.admin_listen.port().to_string()
        );
        let target = format!("{name}:{}", defaults.admin_listen.port());
        assert!(
            targets.contains(target.as_str()),
            "Prometheus misses {target}"
        );
    }
    // Every file Compose mounts from here exists.
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = text(volume, "volume");
            if let Some(rest) = spec.strip_prefix("./") {
                let host = rest.split(':').next().unwrap_or_default();
                assert!(deploy(host).exists(), "{name:?} mounts missing ./{host}");
            }
        }
    }
    // The override for today: same replicas, store reset, no PostgreSQL.
    let embedded: Value = serde_norway::from_str(&read(&deploy("compose.embedded.yaml")))
        .expect("compose.embedded.yaml parses");
    let mut embedded = embedded;
    embedded.apply_merge().expect("merge keys");
    for n in 1..=3 {
        let s = &embedded["services"][format!("switch-{n}").as_str()];
        assert!(
            matches!(&s["environment"]["SWITCH_STORE"], Value::Tagged(t) if t.tag == "!reset"),
            "compose.embedded.yaml must reset SWITCH_STORE for switch-{n}"
        );
    }
    assert!(embedded["services"]["postgres"]["profiles"].is_sequence());
    assert!(
        embedded["services"]["import"]["profiles"].is_sequence(),
        "compose.embedded.yaml must leave the import out too"
    );
    // Grafana's provisioning points at the data source uid the dashboard uses.
    let datasources = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        text(&datasources["datasources"][0]["uid"], "uid"),
        "prometheus"
    );
    let providers = yaml(&deploy("grafana/provisioning/dashboards/switch.yml"));
    let dash_path = text(&providers["providers"][0]["options"]["path"], "path");
    let grafana_mounts = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .expect("grafana volumes");
    assert!(grafana_mounts
        .iter()
        .filter_map(Value::as_str)
        .any(|m| m.starts_with("./grafana/dashboards:") && m.contains(dash_path)));
}

/// The PostgreSQL service and the one-shot import before the replicas (compose.yaml).
fn check_postgres_and_import(compose: &Value, postgres: &Value, import: &Value) {
    assert!(
        text(&postgres["image"], "postgres image").starts_with("postgres:15"),
        "PostgreSQL 15 (the version the store is written for)"
    );
    let check = serde_norway::to_string(&postgres["healthcheck"]["test"]).expect("yaml");
    assert!(
        check.contains("pg_isready"),
        "postgres needs a healthcheck: {check}"
    );
    let data_volume = postgres["volumes"]
        .as_sequence()
        .expect("postgres volumes")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| v.strip_suffix(":/var/lib/postgresql/data"))
        .expect("a volume for /var/lib/postgresql/data");
    assert!(
        compose["volumes"][data_volume].is_null()
            && compose["volumes"]
                .as_mapping()
                .is_some_and(|m| m.contains_key(data_volume)),
        "{data_volume} is a named volume"
    );
    // The store URL names the postgres service, its user and its database.
    let url = text(&import["environment"]["SWITCH_STORE"], "import store");
    let user = text(&postgres["environment"]["POSTGRES_USER"], "POSTGRES_USER");
    let db = text(&postgres["environment"]["POSTGRES_DB"], "POSTGRES_DB");
    assert!(
        url.starts_with(&format!("postgres://{user}@postgres:5432/{db}")),
        "{url} is not {user}@postgres:5432/{db}"
    );
    assert_eq!(
        import["environment"]["PGPASSWORD"],
        postgres["environment"]["POSTGRES_PASSWORD"]
    );
    assert_eq!(
        text(
            &import["depends_on"]["postgres"]["condition"],
            "import depends_on"
        ),
        "service_healthy"
    );
    assert_eq!(import["restart"].as_str(), Some("no"), "a one-shot");
    // Its image: the Dockerfile's `tools` stage, which carries the import script.
    assert_eq!(
        text(&import["build"]["dockerfile"], "dockerfile"),
        "deploy/Dockerfile"
    );
    let target = text(&import["build"]["target"], "import build target");
    let dockerfile = read(&deploy("Dockerfile"));
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {target}"))),
        "deploy/Dockerfile has no stage {target}"
    );
    assert!(dockerfile.contains("COPY --chmod=0755 deploy/postgres/import-demo.sh "));
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .expect("FROM");
    assert!(
        last_from.contains("distroless"),
        "the default target (last stage) stays the replicas' distroless image"
    );
    // The script is valid sh, and asks about the table the migrations create.
    let script = deploy("postgres/import-demo.sh");
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("sh -n");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert!(read(&script).contains("FROM accounts"));
    assert!(
        migrations_sql().contains("CREATE TABLE accounts"),
        "import-demo.sh checks the `accounts` table, which the migrations no longer create"
    );
}

/// Every `.sql` file under switch/migrations, concatenated.
fn migrations_sql() -> String {
    let mut all = String::new();
    let dir = repo().join("switch/migrations");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return all;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) == Some("sql") {
            all.push_str(&read(&p));
        }
    }
    all
}

/// compose.yaml's `import` one-shot for real: deploy/postgres/import-demo.sh with the `switch`
/// binary on PATH against a fresh PostgreSQL database, twice. The first run migrates and loads
/// a demo set, the second finds the accounts and loads nothing, and both exit 0 (a bare second
/// `switch import` would fail, and with it the replicas' `depends_on`). Skips without
/// PostgreSQL or psql.
#[test]
fn import_one_shot_loads_once_and_is_a_no_op_the_second_time() {
    let Some(url) = tests::pg_test_url("import one-shot") else {
        return;
    };
    let Some(psql) = which(
        "psql",
        "import one-shot",
        "apt-get install postgresql-client",
    ) else {
        return;
    };
    let db = tests::pg::TestDatabase::create(&url);
    let bins = tests::replicas::binaries();
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = std::env::join_paths(
        [&bins.switch, &psql]
            .iter()
            .map(|p| p.parent().expect("bin dir").to_owned())
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .expect("PATH");
    let run = || {
        let out = Command::new("sh")
            .arg(deploy("postgres/import-demo.sh"))
            .env("PATH", &path)
            .env("SWITCH_STORE", &db.url)
            .env("TMPDIR", tmp.path())
            .env("IMPORT_DATA_DIR", tmp.path().join("none"))
            .env("DEMO_ACCOUNTS", "300")
            .env("DEMO_ORDERS", "40")
            .env_remove("SWITCH_DATA_DIR")
            .output()
            .expect("run import-demo.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "import-demo.sh failed:\n{text}");
        text
    };
    let first = run();
    assert!(first.contains("import: loaded"), "{first}");
    let count = Command::new(&psql)
        .args([db.url.as_str(), "-X", "-t", "-A", "-c"])
        .arg("SELECT count(*) FROM accounts")
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "300");
    let second = run();
    assert!(second.contains("nothing imported"), "{second}");
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn kubernetes_manifests_parse_and_agree() {
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(deploy("k8s")).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let v = yaml(&path);
        let kind = text(&v["kind"], "kind").to_owned();
        assert!(v["apiVersion"].is_string(), "{}", path.display());
        assert!(v["metadata"]["name"].is_string(), "{}", path.display());
        kinds.insert(kind, v);
    }
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
        "Job",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} in deploy/k8s");
    }
    let deployment = &kinds["Deployment"];
    let config_map = &kinds["ConfigMap"];
    let service = &kinds["Service"];
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(labels_match(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    assert!(labels_match(
        &kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let hpa_target = &kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"];
    assert_eq!(hpa_target["kind"].as_str(), Some("Deployment"));
    assert_eq!(hpa_target["name"], deployment["metadata"]["name"]);

    // The ConfigMap's TOML is a valid switch config; the pod's ports and probes follow it.
    let toml_text = text(&config_map["data"]["switch.toml"], "switch.toml");
    let config = switch_config(toml_text);
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                text(&p["name"], "port name"),
                int(&p["containerPort"], "port"),
            )
        })
        .collect();
    assert_eq!(ports.get("iso8583"), Some(&u64::from(config.listen.port())));
    assert_eq!(
        ports.get("admin"),
        Some(&u64::from(config.admin_listen.port()))
    );
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe}");
    }
    // The pod is given time for the preStop pause and the whole drain.
    let pause = int(
        &container["lifecycle"]["preStop"]["sleep"]["seconds"],
        "preStop",
    );
    let grace = int(
        &spec["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        grace >= pause + config.grace_period_secs + 5,
        "terminationGracePeriodSeconds {grace} < preStop {pause} + drain {} + 5",
        config.grace_period_secs
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    // Volumes and env refer to what is here.
    let volume_names: BTreeSet<&str> = spec["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .map(|v| text(&v["name"], "volume"))
        .collect();
    for mount in container["volumeMounts"].as_sequence().expect("mounts") {
        assert!(volume_names.contains(text(&mount["name"], "mount")));
    }
    let config_volume = spec["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"].is_mapping())
        .expect("a ConfigMap volume");
    assert_eq!(
        config_volume["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let env: Vec<&Value> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .collect();
    let store = env
        .iter()
        .find(|e| e["name"].as_str() == Some("SWITCH_STORE"))
        .expect("SWITCH_STORE from the Secret");
    let secret = &kinds["Secret"];
    let key = &store["valueFrom"]["secretKeyRef"];
    assert_eq!(key["name"], secret["metadata"]["name"]);
    let url = text(&secret["stringData"][text(&key["key"], "key")], "store URL");
    assert!(
        url.starts_with("postgres://"),
        "the store is a PostgreSQL URL"
    );
    // The migrate Job: the same image and the same Secret, `switch migrate --store`.
    let job = &kinds["Job"];
    let job_container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(job_container["image"], container["image"]);
    let args: Vec<&str> = job_container["args"]
        .as_sequence()
        .expect("job args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["migrate", "--store", "$(SWITCH_STORE)"]);
    let job_store = job_container["env"]
        .as_sequence()
        .expect("job env")
        .iter()
        .find(|e| e["name"].as_str() == Some("SWITCH_STORE"))
        .expect("the Job's SWITCH_STORE");
    assert_eq!(job_store["valueFrom"], store["valueFrom"]);
    assert_eq!(
        job_container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    // The Service: a load balancer on the ISO port; PROXY protocol on both ends or neither.
    assert_eq!(service["spec"]["type"].as_str(), Some("LoadBalancer"));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("iso8583")
    );
    let annotations = serde_norway::to_string(&service["metadata"]["annotations"]).expect("yaml");
    assert_eq!(
        annotations.contains("proxy_protocol_v2.enabled=true"),
        config.proxy_protocol,
        "the Service's PROXY protocol and the ConfigMap's proxy_protocol disagree"
    );
}

// ===== PROXY protocol v2 on the ISO listener, over loopback =====

/// Log lines of every switch in this test binary.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (up to 5 s) for a log line holding every one of `parts`.
async fn log_line(parts: &[&str]) -> String {
    let log = captured_log();
    for _ in 0..100 {
        let text =
            String::from_utf8_lossy(&log.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {parts:?}");
}

const ONE_CARD_ORDERS: &str = "order_id,merchant_id,amount,currency,status\n";

fn one_card(pan: &str) -> String {
    format!(
        "pan,expiry,status,currency,balance,daily_limit\n{pan},3012,active,840,1000.00,10000.00\n"
    )
}

fn echo(stan: u32) -> Vec<(usize, String)> {
    vec![
        (7, "1126104500".to_owned()),
        (11, format!("{stan:06}")),
        (70, "301".to_owned()),
    ]
}

/// An 0800 echo as one framed byte string (2-byte length header, `iso87-binary`).
fn echo_frame(stan: u32) -> Vec<u8> {
    let spec = codec::builtin("iso87-binary").expect("spec");
    let mut b = codec::MessageBuilder::new(spec, codec::Mti::parse("0800").expect("mti"));
    let fields = echo(stan);
    for (n, v) in &fields {
        b.set(*n, v).expect("field");
    }
    let mut body = bytes::BytesMut::new();
    b.encode_into(&mut body).expect("encodes");
    let mut frame = u16::try_from(body.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(-1.0)
}

/// The connection ends without an answer.
async fn assert_closed_unanswered(c: &mut Client, what: &str) {
    let next = tokio::time::timeout(
        switch::proxy::HEADER_TIMEOUT + Duration::from_secs(3),
        c.framed.next(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: connection still open"));
    assert!(
        !matches!(next, Some(Ok(_))),
        "{what}: answered instead of closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_header_is_required_and_its_client_address_logged() {
    captured_log();
    let pan = luhn_pan("411111900000002");
    let sw = TestSwitch::start_with(&one_card(&pan), ONE_CARD_ORDERS, |c| {
        c.proxy_protocol = true;
    })
    .await;

    // A proxied connection transacts, and the switch logs the client's address, not ours.
    let client_addr: SocketAddr = "203.0.113.7:40001".parse().expect("addr");
    let header = switch::proxy::encode_v2(client_addr, sw.addr()).expect("header");
    let mut c = sw.client().await;
    c.framed
        .get_mut()
        .write_all(&header)
        .await
        .expect("header sent");
    let reply = c.call("0800", &echo(1)).await;
    assert_eq!((reply.mti.as_str(), reply.code()), ("0810", "00"));
    let reply = c
        .call("0200", &Req::financial(&pan, "000000", 1000, 2).list())
        .await;
    assert_eq!((reply.mti.as_str(), reply.code()), ("0210", "00"));
    let opened = log_line(&["connection opened", "peer.addr=203.0.113.7:40001"]).await;
    assert!(opened.contains("proxy.addr=127.0.0.1:"), "{opened}");

    // Without a valid header, each connection is closed unanswered, logged and counted.
    let mut plain = sw.client().await;
    plain.send("0800", &echo(3)).await;
    assert_closed_unanswered(&mut plain, "an ISO frame without a header").await;

    let mut garbled = header.clone();
    garbled[12] = 0x31; // version 3
    garbled.extend_from_slice(&echo_frame(4));
    let mut bad_version = sw.client().await;
    bad_version
        .framed
        .get_mut()
        .write_all(&garbled)
        .await
        .expect("sent");
    assert_closed_unanswered(&mut bad_version, "a version-3 header").await;

    let mut v1 = sw.client().await;
    v1.framed
        .get_mut()
        .write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 40002 8583\r\n")
        .await
        .expect("sent");
    assert_closed_unanswered(&mut v1, "a v1 text header").await;

    let mut silent = sw.client().await;
    assert_closed_unanswered(&mut silent, "a connection that sends nothing").await;

    let (_, metrics) = sw.admin_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "switch_connections_closed_total{reason=\"proxy_header\"}"
        ),
        4.0,
        "{metrics}"
    );
    log_line(&["PROXY v2 header required", "no PROXY v2 signature"]).await;
    log_line(&["PROXY v2 header required", "no PROXY v2 header within"]).await;

    // The good connection was not disturbed.
    let reply = c.call("0800", &echo(5)).await;
    assert_eq!(reply.code(), "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_proxy_protocol_a_v2_header_is_a_bad_frame() {
    let sw = TestSwitch::start(&one_card(&luhn_pan("411111900000003")), ONE_CARD_ORDERS).await;
    let header = switch::proxy::encode_v2("203.0.113.9:40003".parse().expect("a"), sw.addr())
        .expect("header");
    // The signature's first two bytes, "\r\n", read as a 2-byte length header: 0x0D0A = 3338.
    let declared = usize::from(u16::from_be_bytes([header[0], header[1]]));
    assert_eq!(declared, 3338);
    let mut c = sw.client().await;
    let frame = echo_frame(1);
    let mut bytes = header.clone();
    bytes.extend_from_slice(&frame);
    c.framed.get_mut().write_all(&bytes).await.expect("sent");
    // The echo is swallowed into the bogus frame: no answer.
    assert!(c.try_recv(Duration::from_millis(500)).await.is_none());
    // Complete the bogus frame: it does not decode and is skipped, counted, unanswered.
    let sent = header.len() - 2 + frame.len();
    c.framed
        .get_mut()
        .write_all(&vec![0u8; declared - sent])
        .await
        .expect("filler sent");
    // Framing is back in step: the next echo is answered.
    let reply = c.call("0800", &echo(2)).await;
    assert_eq!((reply.mti.as_str(), reply.code()), ("0810", "00"));
    assert_eq!(reply.get(11), Some("000002"));
    let (_, metrics) = sw.admin_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "switch_frames_skipped_total{reason=\"undecodable\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "switch_connections_closed_total{reason=\"proxy_header\"}"
        ),
        0.0
    );
}
