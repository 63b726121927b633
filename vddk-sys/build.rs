//! Regenerates `src/bindings.rs` when the `regenerate` feature is on; does nothing otherwise,
//! so normal builds need no libclang.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "regenerate")]
    regenerate();
}

#[cfg(feature = "regenerate")]
fn regenerate() {
    use std::path::PathBuf;

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let header = std::env::var_os("VDDK_SYS_HEADER")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("include/vixDiskLib.h"));
    println!("cargo:rerun-if-env-changed=VDDK_SYS_HEADER");
    println!("cargo:rerun-if-changed={}", header.display());

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg("--target=x86_64-unknown-linux-gnu")
        .allowlist_function("VixDiskLib_.*")
        .allowlist_type("VixDiskLib.*|VixError|Bool")
        .allowlist_var("VIX_.*|VIXDISKLIB_.*")
        .dynamic_library_name("VixDiskLibApi")
        .dynamic_link_require_all(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(true)
        .generate()
        .expect("bindgen failed on the VixDiskLib header");
    let out = manifest.join("src/bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("cannot write src/bindings.rs");
}
