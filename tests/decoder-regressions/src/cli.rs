//! Harnesses for what the administrator types or keeps in files: targets, command-line
//! options, the TOML configuration, and the saved `.vmx` edited for restore by import.

use std::path::Path;

use clap::Parser as _;
use safekeeping::cli::{Cli, Command};
use safekeeping::config::{parse_thumbprint, Config};
use safekeeping::restore::vmx::{edit_vmx, value, VmxEdit};
use safekeeping::target::{Target, VmSelector};
use vim_client::DatastorePath;

use crate::input::Input;

#[allow(dead_code, unreachable_pub)]
#[path = "../../lab/src/size.rs"]
mod lab_size;

/// Target syntax (`vm:`, `ivd:`, `vapp:`, `tag:`), datastore paths and repository target
/// keys: `Err` or a value whose printed form parses back to the same value.
pub fn target_parser(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = text.parse::<Target>() {
        let printed = t.to_string();
        let back: Target = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed:?} (printed from {text:?}) does not parse: {e}"));
        assert_eq!(
            back, t,
            "parse(print(t)) != t for input {text:?}, printed {printed:?}"
        );
        if let Target::Vm(VmSelector::InventoryPath(p)) = &t {
            assert!(
                !p.split('/').any(str::is_empty),
                "path {p:?} has an empty element"
            );
        }
    }
    if let Ok(p) = text.parse::<DatastorePath>() {
        let printed = p.to_string();
        let back: DatastorePath = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
        assert_eq!(back, p, "datastore path round trip of {text:?}");
        let _ = (p.parent_dir(), p.file_name());
    }
    if let Ok(k) = repository_format::target::TargetKey::new(text.to_string()) {
        assert!(!k.as_str().contains(['/', '\\', '\0']) && !k.as_str().starts_with('.'));
    }
}

/// Command-line options: the input split at NUL bytes is an argument vector for
/// `safekeeping`; clap and the value parsers (`OLD=NEW`, `N=DS`, targets, counts) answer with
/// a usage error, never a panic. Also sizes, certificate pins and the vCenter URL's host/port.
pub fn cli_options(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.byte();
    let mut args: Vec<String> = vec!["safekeeping".into()];
    let mut rest = input;
    for _ in 0..32 {
        if rest.rest().is_empty() {
            break;
        }
        args.push(rest.text_field());
    }
    if let Ok(cli) = Cli::try_parse_from(&args) {
        if let Command::Restore(r) = &cli.command {
            for (old, new) in &r.network {
                assert!(!old.is_empty() && !new.is_empty(), "empty network mapping");
            }
            for (_, ds) in &r.disk_datastore {
                assert!(!ds.is_empty(), "empty datastore mapping");
            }
        }
        let _ = cli.command.uses_vddk();
    }
    let text = String::from_utf8_lossy(data);
    let text = text.get(1..).unwrap_or("");
    match selector % 3 {
        0 => {
            if let Ok(n) = lab_size::parse_size(text) {
                let digits: String = text
                    .trim()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let number: u64 = digits.parse().expect("accepted size starts with digits");
                assert_eq!(
                    n % number.max(1),
                    0,
                    "{text:?} = {n} is not a multiple of {number}"
                );
                assert_eq!(lab_size::parse_size(&n.to_string()), Ok(n));
            }
        }
        1 => {
            let pin = parse_thumbprint(text);
            let vim = vim_client::tls::parse_sha256(text);
            if let Some(bytes) = pin {
                assert_eq!(
                    vim.as_ref().ok(),
                    Some(&bytes),
                    "a pin the config accepts, the client reads differently: {text:?}"
                );
            }
        }
        _ => {
            if let Ok((host, _port)) = safekeeping::vsphere::session::host_port(text) {
                assert!(!host.is_empty());
            }
        }
    }
}

/// The TOML configuration: `Err` naming the problem, or a configuration whose invariants
/// hold (an http(s) URL, a way to verify TLS or an explicit opt-out, a well-formed pin, at
/// least one parallel target, paths made absolute).
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(c) = Config::parse(&text, Path::new("/etc/safekeeping/config.toml")) else {
        return;
    };
    assert!(c.vcenter.url.starts_with("https://") || c.vcenter.url.starts_with("http://"));
    assert!(
        c.vcenter.url.starts_with("http://")
            || c.vcenter.insecure
            || c.vcenter.ca_file.is_some()
            || c.vcenter.thumbprint_sha256.is_some(),
        "https without a way to verify the server"
    );
    if let Some(t) = &c.vcenter.thumbprint_sha256 {
        assert!(parse_thumbprint(t).is_some());
    }
    assert!(c.defaults.parallel >= 1);
    // An accepted configuration names exactly one repository location, and a folder is
    // resolved against the configuration file's folder.
    assert!(c.repository_location().is_ok());
    if let Some(p) = &c.repository.path {
        assert!(p.is_absolute(), "{p:?}");
    }
    for p in [&c.vcenter.password_file, &c.vcenter.ca_file]
        .into_iter()
        .flatten()
    {
        assert!(p.is_absolute(), "{p:?}");
    }
    let _ = safekeeping::vsphere::session::tls_policy(&c);
}

/// The `.vmx` editor used by restore by import: the output names the restored VM once, on
/// one line, has no disk, controller or NIC keys left, drops the identity unless asked to
/// keep it, and editing twice gives the same text as editing once (line ends aside).
///
/// Input: flags byte, new name, nvram file name (NUL-separated), then the `.vmx` text.
pub fn vmx_edit(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let name = input.text_field();
    let nvram = input.text_field();
    let text = String::from_utf8_lossy(input.rest());
    let edit = VmxEdit {
        name: &name,
        nvram_file: &nvram,
        keep_identity: flags & 1 == 1,
    };
    let out = edit_vmx(&text, &edit);
    let keys: Vec<String> = out
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, _)| k.trim().to_ascii_lowercase())
        })
        .collect();
    let count = |k: &str| keys.iter().filter(|x| *x == k).count();
    assert_eq!(
        count("displayname"),
        1,
        "displayName lines for name {name:?}:\n{out}"
    );
    assert_eq!(count("nvram"), 1, "nvram lines for {nvram:?}:\n{out}");
    assert_eq!(
        value(&out, "displayName").as_deref(),
        Some(name.as_str()),
        "the display name read back differs"
    );
    assert_eq!(
        value(&out, "nvram").as_deref(),
        Some(nvram.as_str()),
        "the nvram file read back differs"
    );
    for k in &keys {
        for prefix in ["scsi", "sata", "nvme", "ethernet"] {
            if let Some(rest) = k.strip_prefix(prefix) {
                assert!(
                    !rest.starts_with(|c: char| c.is_ascii_digit()),
                    "device key {k} survived"
                );
            }
        }
        if !edit.keep_identity {
            assert!(
                !["uuid.bios", "uuid.location", "vc.uuid"].contains(&k.as_str()),
                "{k} kept"
            );
        }
    }
    // A line ending in bare `\r`s loses one `\r` per edit (`str::lines` takes `\r\n` as the
    // line end): harmless to VMware, so line ends are compared without them.
    let twice = edit_vmx(&out, &edit);
    let trimmed = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect()
    };
    assert_eq!(
        trimmed(&twice),
        trimmed(&out),
        "editing twice differs from editing once"
    );
}
