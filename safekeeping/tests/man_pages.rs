//! The manual pages in `docs/man/` are the ones the command line generates: a changed option
//! or command without regenerated pages fails here, so the shipped pages never disagree with
//! the binary. Regenerate with `cargo run -p safekeeping -- man docs/man`.

use std::collections::BTreeMap;
use std::path::Path;

fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn shipped_manual_pages_match_the_command_line() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
    let fresh = tempfile::tempdir().unwrap();
    safekeeping::commands::docs::man_pages(fresh.path()).unwrap();
    let (shipped, fresh) = (pages(&shipped), pages(fresh.path()));
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&shipped),
        names(&fresh),
        "docs/man holds other pages than the command line has: run `cargo run -p safekeeping -- man docs/man` (and delete pages of removed commands)"
    );
    for (name, text) in &fresh {
        assert!(
            shipped[name] == *text,
            "docs/man/{name} is out of date: run `cargo run -p safekeeping -- man docs/man`"
        );
    }
}
