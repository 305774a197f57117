//! Integration tests against a real Kafka-protocol broker and real databases
//! (SQLite files and PostgreSQL). Start them with `scripts/services.sh up`
//! (`scripts/test.sh` does); a missing service fails these tests loudly.
//! The harness they share with the fault tests is `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod console;
mod consumer;
mod http;
mod market;
mod migrations;
mod offsets;
mod operations;
mod predictions;
mod scheduler;
mod sender;
mod smoke;
mod supervisor;
mod walkthrough;
