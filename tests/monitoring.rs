//! The Prometheus rules and the Grafana dashboard gpuwarden ships
//! (`monitoring/`), against the real tools and a real watchdog: promtool's
//! own checks and unit tests, every metric they use exported by
//! `gpuwarden watch --metrics`, and Debian's `prometheus` scraping a running
//! watchdog until the unauthorized-process alert fires.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of `GET path` on 127.0.0.1:port, once something answers (10 s at most).
fn get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
            let mut response = String::new();
            let _ = s.read_to_string(&mut response);
            if let Some((_, body)) = response.split_once("\r\n\r\n") {
                return body.to_string();
            }
        }
        assert!(Instant::now() < deadline, "nothing answers on 127.0.0.1:{port}{path}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A watchdog serving metrics, with one GPU process gpuwarden did not admit (a
/// real host process on the GPU of the inventory standing in for NVML).
struct Watched {
    dir: tempfile::TempDir,
    port: u16,
    _job: KillOnDrop,
    _dog: KillOnDrop,
}

fn watched() -> Watched {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let config = write(dir.path(), "config.toml", &format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n[watch]\ninterval_seconds = 1\n"));
    let program = dir.path().join("train");
    // A link, not a copy: a copied executable run while another thread forks can fail with ETXTBSY.
    std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
    let job = KillOnDrop(Command::new(&program).arg("600").spawn().unwrap());
    let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"");
    let mut inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    inv["gpus"][0]["processes"] = serde_json::json!([{"pid": job.0.id(), "name": "train", "used_memory_bytes": 1u64 << 30}]);
    let inventory = write(dir.path(), "inventory.json", &inv.to_string());
    let port = free_port();
    let dog = KillOnDrop(
        Command::new(bin()).args(["--config", &config, "watch", "--inventory", &inventory, "--metrics", &port.to_string()]).env_remove("GPUWARDEN_CONFIG").stderr(Stdio::null()).spawn().unwrap(),
    );
    Watched { dir, port, _job: job, _dog: dog }
}

/// The `gpuwarden_*` metric names a file uses.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("gpuwarden_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        names.insert(name);
    }
    names
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = repo().join("monitoring/prometheus");
    for args in [vec!["check", "rules", "gpuwarden.rules.yml"], vec!["test", "rules", "gpuwarden.rules.test.yml"]] {
        let o = Command::new("promtool").args(&args).current_dir(&dir).output().expect("promtool (Debian's prometheus package, scripts/setup.sh)");
        assert!(o.status.success(), "promtool {args:?}: {}{}", stdout(&o), stderr(&o));
    }
    let o = Command::new("promtool").args(["check", "config", "scrape.yml"]).current_dir(&dir).output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_one_the_watchdog_exports() {
    let w = watched();
    let metrics = get(w.port, "/metrics");
    let exported: BTreeSet<String> = metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    assert!(exported.contains("gpuwarden_unauthorized_processes"), "{metrics}");
    let dashboard = std::fs::read_to_string(repo().join("monitoring/grafana/gpuwarden.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 5));
    for file in ["monitoring/prometheus/gpuwarden.rules.yml", "monitoring/grafana/gpuwarden.json"] {
        let used = metric_names(&std::fs::read_to_string(repo().join(file)).unwrap());
        assert!(!used.is_empty(), "{file}");
        for name in used {
            assert!(exported.contains(&name), "{file} uses {name}, which the watchdog does not export: {exported:?}");
        }
    }
}

#[test]
fn a_real_prometheus_scraping_a_real_watchdog_fires_the_unauthorized_alert() {
    assert!(Path::new("/usr/bin/prometheus").exists(), "Debian's prometheus is installed by scripts/setup.sh");
    let w = watched();
    let rules = repo().join("monitoring/prometheus/gpuwarden.rules.yml");
    let config = write(
        w.dir.path(),
        "prometheus.yml",
        &format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: gpuwarden\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n", rules.display(), w.port),
    );
    let web = free_port();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", w.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = get(web, "/api/v1/alerts");
        let v: serde_json::Value = serde_json::from_str(&alerts).unwrap_or_default();
        let firing = v["data"]["alerts"].as_array().into_iter().flatten().find(|a| a["labels"]["alertname"] == "GpuwardenUnauthorizedGpuProcess" && a["state"] == "firing");
        if let Some(a) = firing {
            assert_eq!(a["labels"]["gpu"], "GPU-b1d7e4a0-4070-4c00-9e12-0000000a4070");
            assert_eq!(a["annotations"]["summary"], "1 GPU process(es) gpuwarden did not admit on GPU-b1d7e4a0-4070-4c00-9e12-0000000a4070");
            break;
        }
        assert!(Instant::now() < deadline, "the alert did not fire within 60 s: {alerts}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
