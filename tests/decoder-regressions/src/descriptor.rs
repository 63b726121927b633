//! Harness for VMware text disk descriptors.
//!
//! The only descriptor parsers are inside the fake VDDK library (a `cdylib`, so nothing can
//! link against it) and the lab binary. Rather than make either expose anything new, their
//! source files are compiled in here as they are: the fuzzer runs exactly the code they run.

#[allow(dead_code, unreachable_pub)]
#[path = "../../fake-vddk/src/descriptor.rs"]
mod fake;

#[allow(dead_code, unreachable_pub)]
#[path = "../../lab/src/digest.rs"]
mod lab;

/// Descriptor parsers: arbitrary text is `Err` or a descriptor; the fake's rendering of a
/// descriptor parses back to the same descriptor; what the fake accepts, the lab reads as the
/// same single extent.
pub fn vmdk_descriptor(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let fake = fake::Descriptor::parse(&text);
    let lab = lab::parse_extents(&text);
    let Ok(d) = fake else {
        return;
    };
    let rendered = d.render(0xfffffffe);
    let back = fake::Descriptor::parse(&rendered)
        .unwrap_or_else(|e| panic!("rendered descriptor does not parse: {e}\n{rendered}"));
    assert_eq!(back, d, "parse(render(d)) != d\n{rendered}");
    let _ = d.extent_path(std::path::Path::new("/ds/vm/disk.vmdk"));
    let _ = fake::geometry("ide", d.capacity_sectors);
    let _ = fake::geometry("lsilogic", d.capacity_sectors);
    if let Ok(extents) = lab {
        assert_eq!(
            extents.len(),
            1,
            "the fake accepted one extent, the lab read {extents:?}"
        );
        assert_eq!(extents[0].sectors, d.capacity_sectors);
        assert_eq!(extents[0].file, d.extent_file);
        assert_eq!(extents[0].offset, d.extent_offset);
    }
}
