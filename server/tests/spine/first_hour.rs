//! The first hour (issue 14), from the server's side: harnesses that cannot run, failed turns,
//! titles, waiting approvals and what "last active" means.
