//! One tool's long-lived Python worker: started in its jail, spoken to in one JSON message per
//! line ([`centaur_protocol::tools::WorkerRequest`] and
//! [`centaur_protocol::tools::WorkerMessage`]), restarted when it dies.
