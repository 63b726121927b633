//! `fake.hold_open = GATE`: a test pauses a backup right after its snapshot was taken, at the
//! moment it opens the snapshot's disk, and lets it go when it chooses.
//!
//! While the file `GATE` exists, `VixDiskLib_Open` waits; it first writes `GATE.held` (its pid)
//! so the test knows the run got there. The test removes `GATE` to release it. No clock is
//! involved, so the test decides the order of events, not a race; a forgotten gate gives up
//! after ten minutes so that a broken test cannot hang a run forever.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::logging;

const POLL: Duration = Duration::from_millis(50);
const GIVE_UP: Duration = Duration::from_secs(600);

/// Waits while `gate` exists (see the module docs).
pub fn while_present(gate: &Path, what: &str) {
    if !gate.exists() {
        return;
    }
    let mut held = gate.as_os_str().to_owned();
    held.push(".held");
    if let Err(e) = std::fs::write(&held, std::process::id().to_string()) {
        logging::message(true, &format!("fake.hold_open: cannot write {held:?}: {e}"));
    }
    logging::message(
        false,
        &format!(
            "fake.hold_open: {what} waits while {} exists",
            gate.display()
        ),
    );
    let start = Instant::now();
    while gate.exists() {
        if start.elapsed() > GIVE_UP {
            logging::message(
                true,
                "fake.hold_open: gate still there after 600 s; going on",
            );
            return;
        }
        std::thread::sleep(POLL);
    }
}
