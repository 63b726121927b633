//! `safekeeping-lab`: starts and drives the safekeeping test lab, an extended vCenter
//! simulator (Go, built from Debian's govmomi) plus the fake libvixDiskLib.
//!
//! See docs/lab.md for the commands, the files `up` writes and the guest data generator.

mod admin;
mod cli;
mod config_files;
mod digest;
mod fsutil;
mod lab_dir;
mod s3;
mod server;
mod sigv4;
mod size;
mod toolchain;
mod tools;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("safekeeping-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
