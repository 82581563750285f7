//! Rill's engine: the record model, the expression language, pipeline configuration, the job
//! plan and the actor runtime that runs it.

pub mod expr;
pub mod exchange;
pub mod message;
pub mod record;
pub mod value;
pub mod config;
