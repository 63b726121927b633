//! A backup of two VMs on a terminal, with progress bars drawn while log lines are printed:
//! every log line (as `--log-file` recorded it) is still on the screen afterwards — no bar
//! redraw overwrote one — and no bar frame is left behind.
//!
//! The screen is what a VT100 terminal emulator (pyte, in the lab's Python environment) makes
//! of the bytes the process wrote on a pseudo-terminal, cursor movements and erasures
//! included.

use std::path::Path;
use std::process::Command;

use safekeeping_e2e::{binary, Lab};

/// The message of a log line, without timestamp, level and (file layer) module path:
/// `2026-12-04T11:00:00.123Z  INFO safekeeping::backup: msg` → `msg`.
fn message(line: &str) -> Option<String> {
    let rest = ["ERROR ", "WARN ", "INFO ", "DEBUG ", "TRACE "]
        .iter()
        .find_map(|l| line.split_once(l).map(|(_, r)| r))?;
    let rest = rest.trim_start();
    let rest = match rest.split_once(": ") {
        Some((module, r)) if module.starts_with("safekeeping") && !module.contains(' ') => r,
        _ => rest,
    };
    Some(rest.trim_end().to_string())
}

#[test]
fn no_log_line_is_lost_under_progress_bars() {
    let lab = Lab::up();
    for vm in ["web01", "db01"] {
        lab.create_vm(vm, &["48M", "32M"], &[]);
        lab.guest_write(vm, 0, "0", "40M", Some(1));
        lab.guest_write(vm, 1, "0", "24M", Some(2));
    }
    // Slow reads: the bars are drawn (and redrawn) for seconds while targets log.
    lab.vddk_conf_append("fake.read_latency_ms = 40");
    lab.sk(&["repo", "init"]).ok();

    let which = Command::new(binary("safekeeping-lab"))
        .args(["which", "python"])
        .output()
        .expect("safekeeping-lab which python");
    assert!(
        which.status.success(),
        "{}",
        String::from_utf8_lossy(&which.stderr)
    );
    let python = String::from_utf8_lossy(&which.stdout).trim().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pty_screen.py");
    let log = lab.dir().join("terminal.log");
    let out = Command::new(python)
        .arg(&script)
        .arg("400")
        .arg(binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .arg("--log-file")
        .arg(&log)
        .args(["backup", "vm:web01", "vm:db01", "--parallel", "2"])
        .env_remove("SAFEKEEPING_CONFIG")
        .env("TERM", "xterm-256color")
        .output()
        .expect("run pty_screen.py");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        screen.trim_end().ends_with("EXIT 0"),
        "backup on a terminal failed:\n{screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rows joined: a log line longer than the terminal is wrapped onto the next row.
    let joined: String = screen.lines().collect();
    let logged = std::fs::read_to_string(&log).unwrap();
    let messages: Vec<String> = logged.lines().filter_map(message).collect();
    assert!(
        messages
            .iter()
            .filter(|m| m.contains("backup succeeded"))
            .count()
            == 2,
        "the log file should hold both targets' result lines:\n{logged}"
    );
    // Each disk's bar was replaced by its summary line.
    assert!(
        messages.iter().filter(|m| m.contains("/s)")).count() >= 4,
        "one summary line per disk:\n{logged}"
    );
    let lost: Vec<&String> = messages
        .iter()
        .filter(|m| !joined.contains(m.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} log lines are not on the terminal: {lost:#?}\n--- screen\n{screen}",
        lost.len(),
        messages.len()
    );
    // No bar frame stays behind (the bars' template ends in "eta ...").
    let frames: Vec<&str> = screen.lines().filter(|l| l.contains(" eta ")).collect();
    assert!(frames.is_empty(), "stale bar frames: {frames:#?}");
}

/// Runs `safekeeping ARGS` on a pseudo-terminal; returns the screen (history included).
fn on_terminal(lab: &Lab, args: &[&str]) -> String {
    let which = Command::new(binary("safekeeping-lab"))
        .args(["which", "python"])
        .output()
        .expect("safekeeping-lab which python");
    let python = String::from_utf8_lossy(&which.stdout).trim().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pty_screen.py");
    let out = Command::new(python)
        .arg(&script)
        .arg("200")
        .arg(binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .args(args)
        .env_remove("SAFEKEEPING_CONFIG")
        .env("TERM", "xterm-256color")
        .output()
        .expect("run pty_screen.py");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_export_and_gc_show_progress_and_leave_a_summary_line() {
    let lab = Lab::up();
    lab.create_vm("web", &["48M"], &[]);
    lab.guest_write("web", 0, "0", "32M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:web"]).ok();
    lab.guest_write("web", 0, "0", "8M", Some(2));
    lab.sk(&["backup", "vm:web"]).ok();

    let summary = |screen: &str, label: &str| {
        assert!(
            screen.trim_end().ends_with("EXIT 0"),
            "{label} on a terminal failed:\n{screen}"
        );
        // The bar was replaced by its summary line: `LABEL: 32.0 MiB in 0.1 s (…/s)`.
        assert!(
            screen
                .lines()
                .any(|l| l.contains(label) && l.contains(" in ") && l.ends_with("/s)")),
            "no summary line for `{label}`:\n{screen}"
        );
        let frames: Vec<&str> = screen.lines().filter(|l| l.contains(" eta ")).collect();
        assert!(frames.is_empty(), "stale bar frames: {frames:#?}");
    };
    let screen = on_terminal(&lab, &["check", "--read-data"]);
    summary(&screen, "check: reading every chunk");
    assert!(screen.contains("read and verified"), "{screen}");
    let screen = on_terminal(&lab, &["check", "--read-data-subset", "1/2"]);
    summary(&screen, "check: reading part 1/2 of the chunks");

    let image = lab.dir().join("web.raw");
    let screen = on_terminal(
        &lab,
        &[
            "export",
            "vm:web",
            "--disk",
            "0",
            "--output",
            image.to_str().unwrap(),
        ],
    );
    summary(&screen, "export: disk 0 of generation 2");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 48 << 20);

    lab.sk(&["prune", "vm:web", "--keep-last", "1"]).ok();
    let screen = on_terminal(&lab, &["gc"]);
    summary(&screen, "gc: removing unreferenced chunks");

    // Without a terminal: no bar, and quiet (-q) prints nothing at all on success.
    let r = lab.sk(&["-q", "check", "--read-data"]).ok();
    assert!(
        r.stdout.is_empty() && r.stderr.is_empty(),
        "{}",
        r.all_output()
    );
}
