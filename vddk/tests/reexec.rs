//! `ensure_library_path` re-executes the program once with `<libdir>/lib64` on
//! LD_LIBRARY_PATH, keeping its arguments, and does nothing when the path is already there.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn probe() -> PathBuf {
    let exe = common::profile_dir().join("examples/reexec_probe");
    if !exe.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "vddk",
                "--example",
                "reexec_probe",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    exe
}

fn run(libdir: &std::path::Path, ld: Option<&str>) -> String {
    let mut cmd = Command::new(probe());
    cmd.arg(libdir).args(["--vm", "web01"]);
    cmd.env_remove(vddk::REEXEC_GUARD);
    match ld {
        Some(v) => cmd.env("LD_LIBRARY_PATH", v),
        None => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn reexecutes_once_with_lib64_first() {
    let root = common::scratch("reexec");
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    let lib64 = root.join("lib64");
    let out = run(&root, Some("/usr/local/lib"));
    assert!(
        out.contains(&format!(
            "LD_LIBRARY_PATH={}:/usr/local/lib\n",
            lib64.display()
        )),
        "{out}"
    );
    assert!(out.contains("GUARD=1\n"), "{out}");
    assert!(out.contains("ARGS=--vm web01\n"), "{out}");

    let out = run(&root, None);
    assert!(
        out.contains(&format!("LD_LIBRARY_PATH={}\n", lib64.display())),
        "{out}"
    );
}

#[test]
fn does_nothing_when_already_on_the_path() {
    let root = common::scratch("noexec");
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    let ld = format!("/a:{}", root.join("lib64").display());
    let out = run(&root, Some(&ld));
    assert!(out.contains(&format!("LD_LIBRARY_PATH={ld}\n")), "{out}");
    assert!(out.contains("GUARD=\n"), "not re-executed: {out}");
}
