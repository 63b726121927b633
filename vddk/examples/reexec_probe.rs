//! Used by the `reexec` test: calls `vddk::ensure_library_path` and prints what it sees.
//!
//! `reexec_probe <libdir> [args...]` prints `LD_LIBRARY_PATH=...`, `GUARD=...` and `ARGS=...`.

fn main() {
    let mut args = std::env::args().skip(1);
    let libdir = args.next().expect("usage: reexec_probe <libdir> [args...]");
    if let Err(e) = vddk::ensure_library_path(libdir.as_ref()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    println!(
        "LD_LIBRARY_PATH={}",
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    );
    println!(
        "GUARD={}",
        std::env::var(vddk::REEXEC_GUARD).unwrap_or_default()
    );
    println!("ARGS={}", args.collect::<Vec<_>>().join(" "));
}
