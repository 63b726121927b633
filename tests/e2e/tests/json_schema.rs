//! Every command's `--json` output, from real runs on the lab, validates against its schema
//! in `docs/json/COMMAND.schema.json` (docs/json.md describes them): backup (and its dry run),
//! restore (and its dry run), list, show, check, prune, gc, stats, runs, diff, doctor,
//! jobs list, copy and export.

use std::path::Path;

use safekeeping_e2e::{schema, Lab};

/// The schema of `name` from docs/json/.
fn schema_of(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/json")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The one vocabulary every output keeps: a `target` that is a string is a display name
/// (`vm:NAME`, `ivd:…`, `vapp:…`), never a folder key; arrays hold values or objects, never
/// positional arrays.
fn vocabulary(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "target" {
                    if let Some(t) = x.as_str() {
                        if !["vm:", "ivd:", "vapp:", "tag:"]
                            .iter()
                            .any(|p| t.starts_with(p))
                        {
                            out.push(format!("{path}.target: `{t}` is not a display name"));
                        }
                    }
                }
                vocabulary(x, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if x.is_array() {
                    out.push(format!("{path}[{i}]: a positional array"));
                }
                vocabulary(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_commands_json_output_validates_against_its_schema() {
    let lab = Lab::up();
    lab.create_vm("web", &["16M", "8M"], &["VM Network"]);
    lab.guest_write("web", 0, "0", "4M", Some(1));
    let uuid = lab.dir().join("product_uuid");
    std::fs::write(&uuid, "4215A0E0-1234-5678-9ABC-DEF012345678\n").unwrap();
    let offsite = lab.dir().join("offsite");
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let config = lab.dir().join("json.toml");
    std::fs::write(
        &config,
        format!(
            "{base}\n[repositories.offsite]\npath = \"{}\"\n\n[jobs.nightly]\ntargets = [\"vm:web\"]\nkeep_last = 2\ngc = true\n",
            offsite.display()
        ),
    )
    .unwrap();
    let env = [("SAFEKEEPING_PRODUCT_UUID_FILE", uuid.to_str().unwrap())];
    let mut outputs: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut json = |schema: &'static str, args: &[&str], code: i32| {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let r = lab.sk_with(&full, &config, &env).expect_code(code);
        outputs.push((schema, r.json()));
    };

    lab.sk_with(&["repo", "init"], &config, &[]).ok();
    json("backup", &["backup", "vm:web", "--dry-run"], 0);
    json("backup", &["backup", "vm:web"], 0);
    lab.guest_write("web", 0, "8M", "1M", Some(2));
    json("backup", &["backup", "vm:web", "vm:nosuch"], 3);
    json("list", &["list"], 0);
    json("list", &["list", "vm:web"], 0);
    json("show", &["show", "vm:web"], 0);
    json("check", &["check"], 0);
    json("check", &["check", "--read-data-subset", "1/3"], 0);
    json("stats", &["stats"], 0);
    json("stats", &["stats", "vm:web"], 0);
    json("runs", &["runs"], 0);
    json("diff", &["diff", "vm:web", "1", "2"], 0);
    json("doctor", &["doctor"], 0);
    json("jobs-list", &["jobs", "list"], 0);
    lab.sk_with(&["--repo", "offsite", "repo", "init"], &config, &[])
        .ok();
    json("copy", &["copy", "--to", "offsite"], 0);
    let image = lab.dir().join("web.raw");
    json(
        "export",
        &[
            "export",
            "vm:web",
            "--disk",
            "0",
            "--output",
            image.to_str().unwrap(),
        ],
        0,
    );
    json(
        "restore",
        &["restore", "vm:web", "--dry-run", "--name", "web-json"],
        0,
    );
    json("restore", &["restore", "vm:web", "--name", "web-json"], 0);
    json("prune", &["prune", "--keep-last", "1", "--dry-run"], 0);
    json("prune", &["prune", "--keep-last", "1"], 0);
    json("gc", &["gc", "--dry-run"], 0);
    json("gc", &["gc"], 0);
    // A damaged chunk: check names it by the target's display name, the key beside it.
    let chunks = lab.dir().join("repo/chunks");
    let chunk = std::fs::read_dir(&chunks)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.is_file())
        .expect("a chunk file");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    json("check", &["check", "--read-data"], 1);

    let damaged = &outputs.last().unwrap().1;
    assert_eq!(
        damaged["problems"][0]["used_by"][0]["target"], "vm:web",
        "{damaged:#}"
    );
    assert!(
        damaged["problems"][0]["used_by"][0]["key"].is_string(),
        "{damaged:#}"
    );
    let mut failures = Vec::new();
    for (name, value) in &outputs {
        let mut v = schema::violations(&schema_of(name), value);
        vocabulary(value, "$", &mut v);
        if !v.is_empty() {
            failures.push(format!("{name}: {v:#?}\n{value:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
