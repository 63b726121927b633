//! The test lab: an extended vCenter simulator and the tool that drives it.

fn main() {
    eprintln!("safekeeping-lab: not built yet");
    std::process::exit(2);
}
