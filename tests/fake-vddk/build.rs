//! Compiles the one C helper the fake needs: Rust cannot build a `va_list`, and VDDK's log
//! callbacks take one.

fn main() {
    println!("cargo:rerun-if-changed=csrc/log.c");
    cc::Build::new()
        .file("csrc/log.c")
        .warnings(true)
        .compile("fakevddklog");
}
