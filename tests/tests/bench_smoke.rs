//! `bench --smoke` and a tiny `bench-scale`: every section of both benchmarks on a tiny fleet,
//! against the real services. They assert only that each figure is produced, never its value
//! (timings are not tests).

use std::process::Command;

#[test]
fn bench_smoke_produces_every_figure() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let dir = std::env::temp_dir().join(format!("kubecensus-bench-smoke-{id}"));
    let json = dir.with_extension("json");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--database", &format!("kc_bench_smoke_{id}")])
        .args(["--stream", &format!("KC_BENCH_SMOKE_{id}"), "--subject-prefix", &format!("kcbenchsmoke_{id}")])
        .arg("--dir")
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .env("KUBECENSUS_BIN_DIR", env!("CARGO_BIN_EXE_bench").rsplit_once('/').unwrap().0)
        .output()
        .expect("running bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench --smoke failed (worker logs in {}):\n{stdout}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&json);

    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "one round per worker count");
    for round in rounds {
        assert!(round["rows"].as_i64().unwrap() > 0, "{round}");
        // `skipped`: resources the simulated clusters do not serve (removed API versions).
        let statuses = round["statuses"].as_object().unwrap();
        assert!(statuses.keys().all(|s| s == "succeeded" || s == "skipped"), "{round}");
        assert!(statuses["succeeded"].as_i64().unwrap() > 0, "{round}");
        assert!(round["worker_peak_rss"].as_array().unwrap().iter().all(|p| p[1].as_u64().unwrap() > 0));
        assert!(!round["tables"].as_array().unwrap().is_empty());
    }
    let loads: Vec<&str> = report["loads"].as_array().unwrap().iter().map(|l| l["mode"].as_str().unwrap()).collect();
    assert_eq!(loads, ["Plain", "Plain", "Indexed"], "raw COPY by 1 and 2 connections, and with indexes");
    assert!(report["fetch"]["objects"].as_u64().unwrap() > 0);
    assert_eq!(report["readers"].as_array().unwrap().len(), 3, "idle, raw COPY, refresh");
    assert!(report["readers"].as_array().unwrap().iter().all(|p| p["queries"].as_u64().unwrap() > 0));
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(
        queries.len(),
        8 + 6 + 8 + 1 + 3 * 7 + 1,
        "eight queries, six pages of unhealthy objects, eight explorer API requests, the page's load in \
         Chromium, seven queries as each of two viewers and unrestricted, and the permissions' recompute"
    );
    let load = queries.iter().find(|q| q["name"].as_str().unwrap().contains("loaded in headless Chromium")).unwrap();
    assert!(load["median_ms"].as_f64().unwrap() > 0.0 && load["rows_returned"].as_u64().unwrap() > 0, "{load}");
    assert!(report["overhead"]["wall_per_job_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["sizes"].as_array().unwrap().len(), 2);
    assert!(!report["verdicts"].as_array().unwrap().is_empty());
    assert!(stdout.contains("## Targets"), "{stdout}");
}

#[test]
fn a_tiny_bench_scale_produces_every_figure() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let dir = std::env::temp_dir().join(format!("kubecensus-bench-scale-smoke-{id}"));
    let bin = env!("CARGO_BIN_EXE_bench-scale");
    let output = Command::new(bin)
        .args(["--clusters", "3", "--namespaces", "3", "--nodes", "2", "--pods", "10", "--churn", "2"])
        .args(["--pod-refreshes", "2", "--pod-interval", "0", "--autovacuum-wait", "0", "--readers", "2"])
        .args(["--reader-secs", "1", "--query-runs", "1"])
        .args(["--stream", &format!("KC_SCALE_SMOKE_{id}"), "--subject-prefix", &format!("kcscalesmoke_{id}")])
        .arg("--dir")
        .arg(&dir)
        .env("KUBECENSUS_BIN_DIR", bin.rsplit_once('/').unwrap().0)
        .output()
        .expect("running bench-scale");
    assert!(output.status.success(), "bench-scale failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for round in ["first_load", "refresh"] {
        assert!(report[round]["jobs"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report[format!("{round}_throughput")]["tenths"].as_array().unwrap().len(), 10);
    }
    assert!(report["after_refresh"]["relations"].as_i64().unwrap() > 0);
    assert_eq!(report["pod_refreshes"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["queries"].as_array().unwrap().len(),
        4 + 6 + 2,
        "the design's four right after the first load, six queries, and the README's two History queries"
    );
    let viewers = report["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 8 + 1 + 3 * 7 + 1, "the explorer's API and page, the queries as viewers, the recompute");
    assert_eq!(report["pages"].as_array().unwrap().len(), 6, "first and deep pages: table, view, prepared view");
    assert!(report["readers"]["queries"].as_u64().unwrap() > 0);
    assert!(!report["verdicts"].as_array().unwrap().is_empty());
}
