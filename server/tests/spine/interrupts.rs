//! Ending a turn early (an interrupt, the deadline, a release) ends every process it started,
//! for every harness.
