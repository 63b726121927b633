//! The safekeeping repository: a verified, deduplicated chunk store for disk images.
