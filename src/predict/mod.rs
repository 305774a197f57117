//! Model inference for the predictions module (`consumers/predictions.rs`):
//! the two wire formats ([`protocol`]: `json` and the Open Inference
//! Protocol's `v2`) and the model server's client ([`client`]: one POST per
//! batch, every answer classified, a breaker per server).
//!
//! It may use `common`, `events` and `config`.

pub mod client;
pub mod protocol;

pub use client::{Answer, Call, ModelClient};
