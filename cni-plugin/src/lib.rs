//! `furrow`: the CNI plugin (spec 1.1.0; configs from 0.3.0 on).
//!
//! It validates the environment and the network config itself, so
//! mistakes get precise CNI error codes without a round trip, then hands
//! the attachment to netd over its unix socket. netd does all kernel
//! work; the plugin never touches the kernel. No async runtime and no
//! HTTP stack: the binary runs once per attachment and must start fast.
//!
//! A library as well as the binary so the fuzz targets (fuzz/) reach the
//! very parsers the binary runs ([`commands::prepare`],
//! [`validate::run`]).

pub mod args;
pub mod commands;
pub mod config;
pub mod env;
pub mod output;
pub mod result;
pub mod validate;
