//! Shared helpers for the integration tests: `mod support;` in a test crate pulls these in.
//!
//! Not every test crate uses every helper, hence the blanket allow.
#![allow(dead_code)]

pub mod chain;
pub mod classic;
pub mod proxy;
pub mod python;
pub mod scenarios;
pub mod tls;
pub mod zk;
