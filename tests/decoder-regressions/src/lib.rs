//! Replays fuzzing corpora and crash regressions through every decoder of safekeeping.
