//! Process-level test harness (see tests/tests/).
