//! End-to-end tests of safekeeping against the lab.
